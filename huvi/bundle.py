"""One zip of an export: its LoRA files, its model card and the run's settings, to download or share.

    NAME.zip
      NAME.safetensors, NAME.motion.safetensors   the exported files (huvi.export)
      README.md                                   their model card
      config.yaml, run.json                       the run's resolved config and what it trained on

Written beside the export under a temporary name and renamed (huvi.io), so a half-written zip is
never mistaken for a whole one.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from huvi.export import ExportResult
from huvi.io import atomic_write
from huvi.runs import Run

logger = logging.getLogger(__name__)


def bundle_export(result: ExportResult, run_dir: Path, out: Path) -> Path:
    """Zip `result`'s files and card with the run's config.yaml and run.json into `out`; returns `out`."""
    run = Run(run_dir)
    members = [(Path(f), Path(f).name) for f in result.files] + [(Path(result.card), "README.md")]
    members += [(path, path.name) for path in (run.config_path, run.info_path) if path.is_file()]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, name in members:
                archive.write(path, name)

    out = Path(out)
    atomic_write(out, write)
    logger.info("wrote %s (%s)", out, ", ".join(name for _, name in members))
    return out
