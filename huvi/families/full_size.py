"""What the families' full-size random weights share: the architectures shipped in `huvi/configs/`
(public config.json files, read without a download) and writing a model folder whole."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from huvi.io import publish_dir

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # huvi/configs/, shipped as package data
MARKER = "huvi-test-weights.json"  # written last: a folder with it is complete


def read_architecture(name: str) -> dict:
    """The shipped config dict `huvi/configs/<name>.json`."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def write_folder(folder: Path, save: Callable[[Path], None]) -> None:
    """`save(tmp)` into a temporary folder beside `folder`, then rename it into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    publish_dir(tmp, folder)
