"""`python -m huvi.bench ARGS` is `python -m huvi bench ARGS`: the CLI parses and prints."""

import sys

from huvi.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
