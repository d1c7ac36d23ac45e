"""Loading pretrained components from a Hub id or a local folder, with a missing download said plainly;
and the Hub id such a setting stands for, for exported files' metadata and model cards (`hub_id`).

A relative folder that is not under the working directory but is under the repository (the demo
preset's `models/demo/...`) is the repository's (`local_source`), so a preset may name the weights
that ship with huvi wherever it is run from."""

from __future__ import annotations

import re
from pathlib import Path

from huvi.errors import HuviError

_HF_CACHE_REPO = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)")
REPO = Path(__file__).resolve().parent.parent  # the checkout (an editable install runs from it)


def local_source(source: str) -> str:
    """`source` itself, or REPO/source when it is a relative path that exists there and not here."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists() or not (REPO / path).exists():
        return source
    return str(REPO / path)


def pretrained(loader, repo: str, **kwargs):
    """`loader.from_pretrained(repo, **kwargs)`, with a missing download turned into one sentence."""
    try:
        return loader.from_pretrained(local_source(repo), **kwargs)
    except (OSError, ValueError) as err:
        where = f"{repo} ({kwargs['subfolder']})" if "subfolder" in kwargs else repo
        raise HuviError(
            f"Could not load {where}: the weights are not on this machine or not in diffusers layout "
            f"({type(err).__name__}). Fetch them once while online with `hf download {repo}`, or set "
            f"the model path to a local folder; the tiny preset (--preset tiny) needs no weights."
        ) from None


def hub_id(source: str, default: str) -> tuple[str, str]:
    """(Hub id, local folder or "") of a model setting (a Hub id or a folder), for model cards and
    metadata, which must name a Hub id. A Hub id is itself; a folder of the Hugging Face cache
    (`.../models--OWNER--NAME/snapshots/...`) names its repository; any other folder cannot say
    which Hub model it holds, so `default` (the architecture's own Hub id) stands for it, and the
    folder is named beside it."""
    path = Path(local_source(source)).expanduser()
    if not path.is_dir():
        return source, ""
    folder = str(path.resolve())
    match = next((m for part in path.resolve().parts if (m := _HF_CACHE_REPO.fullmatch(part))), None)
    if match:
        return f"{match['owner']}/{match['name']}", folder
    return default, folder
