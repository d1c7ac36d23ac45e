"""The one exception type a user is meant to see.

A `HuviError` carries one sentence that says what went wrong and what to do about it. The CLI and
the app print its message and nothing else; any other exception is a bug and keeps its traceback.
"""


class HuviError(Exception):
    """A problem with the user's input or machine, stated as one actionable sentence."""
