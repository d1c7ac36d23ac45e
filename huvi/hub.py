"""Loading pretrained components from a Hub id or a local folder, with a missing download said plainly."""

from __future__ import annotations

from huvi.errors import HuviError


def pretrained(loader, repo: str, **kwargs):
    """`loader.from_pretrained(repo, **kwargs)`, with a missing download turned into one sentence."""
    try:
        return loader.from_pretrained(repo, **kwargs)
    except (OSError, ValueError) as err:
        where = f"{repo} ({kwargs['subfolder']})" if "subfolder" in kwargs else repo
        raise HuviError(
            f"Could not load {where}: the weights are not on this machine or not in diffusers layout "
            f"({type(err).__name__}). Fetch them once while online with `hf download {repo}`, or set "
            f"the model path to a local folder; the tiny preset (--preset tiny) needs no weights."
        ) from None
