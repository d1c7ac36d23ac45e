"""A run's video model kept loaded between requests (the app's Generate tab and DenseDPO tab).

Loading the UNet, its adapters and the encoders takes seconds to tens of seconds; a second clip
from the same run starts sampling at once. The model is keyed by the run folder, its config and
adapter files (modification time and size: a resumed run rewrites them) and the device, so a run
trained further is loaded anew; `release()` frees it (and the GPU's cache) before training needs
the GPU. This module imports no model code until a model is asked for, so the app starts fast.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from huvi.precision import default_device
from huvi.runs import STAGES, Run

if TYPE_CHECKING:
    from huvi.generate import RunModel


def model_key(run_dir: Path, device: torch.device) -> tuple:
    """What a loaded RunModel depends on: the run folder, its config and adapter files (each by
    modification time and size: a resumed run rewrites them) and the device."""
    run = Run(run_dir)
    files = [run.config_path] + [run.adapter_path(stage) for stage in STAGES]
    stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files)
    return str(Path(run_dir).resolve()), stamps, str(device)


class ModelCache:
    """The last RunModel loaded, kept for the next request on the same run (the app's Generate tab):
    a second clip starts sampling at once instead of loading the model again. A run whose adapters
    changed since is loaded anew; `release()` frees the memory before training takes the GPU."""

    def __init__(self) -> None:
        self._model: RunModel | None = None
        self._key: tuple | None = None  # model_key of the model held
        self._lock = threading.Lock()

    def get(self, run_dir: Path, device: torch.device | None = None) -> RunModel:
        device = device or default_device()
        with self._lock:
            key = model_key(Path(run_dir), device)
            if self._model is None or self._key != key:
                from huvi.generate import RunModel  # the model code, imported with the first model

                self._release()
                self._model, self._key = RunModel(run_dir, device), key
            return self._model

    @property
    def loaded(self) -> Path | None:
        """The run folder whose model is held, if any."""
        return self._model.run_dir if self._model is not None else None

    def release(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._model is None:
            return
        device = self._model.device
        self._model = self._key = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
