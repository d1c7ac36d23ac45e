"""The best held-out DPO adapter of a run (data.holdout > 0): the one a finished stage keeps.

Every `dpo.eval_every` steps the held-out pairs are scored (huvi.evaluate.score_pairs). An adapter
whose held-out accuracy beats every earlier check's is written to

    RUN/best/dpo-STEP.safetensors

and at the end of the stage it becomes `adapters/dpo.safetensors` (the last step's adapter is kept
as `adapters/dpo.last.safetensors`). Ties keep the earlier adapter: it is the nearer the reference.
The best step and score travel in each checkpoint, so a resumed run keeps the same one; the files
stay until the stage ends (a resume may go back to a checkpoint older than the newest of them).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from huvi.io import write_safetensors


@dataclass(frozen=True)
class Best:
    step: int
    val_accuracy: float
    val_reward_margin: float


class BestAdapter:
    def __init__(self, folder: Path, stage: str, restored: dict | None = None) -> None:
        self.folder, self.stage = Path(folder), stage
        self.best = Best(**restored) if restored else None

    def path(self, step: int) -> Path:
        return self.folder / f"{self.stage}-{step:06d}.safetensors"

    def offer(self, step: int, scores: dict, adapter: dict[str, torch.Tensor]) -> bool:
        """Keep `adapter` (the stage's LoRA tensors at `step`) if its held-out accuracy beats the best so far."""
        accuracy = scores.get("val_accuracy", math.nan)
        if math.isnan(accuracy) or (self.best is not None and accuracy <= self.best.val_accuracy):
            return False
        write_safetensors(self.path(step), adapter)
        self.best = Best(step, accuracy, scores.get("val_reward_margin", math.nan))
        return True

    def state(self) -> dict | None:
        """What a checkpoint stores to resume with the same best adapter."""
        return asdict(self.best) if self.best else None

    def tensors(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path(self.best.step)))

    def remove(self) -> None:
        """Delete the stage's kept adapters (once the final one is written)."""
        for path in self.folder.glob(f"{self.stage}-*.safetensors"):
            path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            shutil.rmtree(self.folder, ignore_errors=True)
