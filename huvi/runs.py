"""The run folder: what a training run writes, and how it is read back.

    RUN/config.yaml                   the resolved HuviConfig the run started with
    RUN/run.json                      what it was trained on: category folder, prompt, clips, pairs
    RUN/metrics.jsonl                 one JSON object per step, with "stage" and "step"
    RUN/train.log                     the log
    RUN/adapters/{motion,dpo}.safetensors   final adapters (peft keys, settings in metadata)
    RUN/adapters/dpo.last.safetensors       with data.holdout > 0: the last step's DPO adapter, when the
                                            final one is the best held-out one (huvi.best)
    RUN/best/dpo-{step:06d}.safetensors     the best held-out DPO adapters so far, until the stage ends
    RUN/checkpoints/{stage}-{step:06d}/     adapter, optimizer, lr schedule, RNG, pair order, step
    RUN/previews/{stage}-{step:06d}.mp4     fixed-seed preview clips (every generate.preview_every steps)

A checkpoint folder is written under a temporary name and renamed when complete, so the newest
folder with a final name is always whole; every file is written to a temporary name and renamed
(huvi.io). A process killed in the middle of a write leaves only such temporaries, which `--resume`
removes (`remove_temporaries`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.io import publish_dir, write_json, write_safetensors, write_text

logger = logging.getLogger(__name__)

STAGES = ("motion", "dpo")
# What a background job (huvi.jobs) writes into a run folder before training starts: a new run
# may begin in a folder that holds only these.
JOB_FILE, JOB_LOG = "job.json", "job.log"
JOB_FILES = (JOB_FILE, JOB_LOG)
_CKPT = re.compile(r"(motion|dpo)-(\d{6})")


@dataclass(frozen=True)
class CheckpointRef:
    path: Path
    stage: str
    step: int

    @property
    def order(self) -> tuple[int, int]:
        return STAGES.index(self.stage), self.step


class Run:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    config_path = property(lambda self: self.root / "config.yaml")
    info_path = property(lambda self: self.root / "run.json")
    metrics_path = property(lambda self: self.root / "metrics.jsonl")
    log_path = property(lambda self: self.root / "train.log")
    checkpoints = property(lambda self: self.root / "checkpoints")

    def adapter_path(self, stage: str) -> Path:
        return self.root / "adapters" / f"{stage}.safetensors"

    def last_adapter_path(self, stage: str) -> Path:
        """The last step's adapter, kept beside the final one when that is the best held-out one."""
        return self.root / "adapters" / f"{stage}.last.safetensors"

    best_folder = property(lambda self: self.root / "best")

    def preview_path(self, stage: str, step: int) -> Path:
        return self.root / "previews" / f"{stage}-{step:06d}.mp4"

    def holds_files(self) -> bool:
        """Whether the folder holds anything besides a background job's own files."""
        return self.root.exists() and any(p.name not in JOB_FILES for p in self.root.iterdir())

    def exists(self) -> bool:
        return self.config_path.is_file()

    def write_config(self, cfg: HuviConfig) -> None:
        write_text(self.config_path, cfg.to_yaml())

    def write_info(self, info: dict) -> None:
        write_json(self.info_path, info)

    def read_info(self) -> dict:
        """run.json, or {} for a run without one (or with an unreadable one)."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def read_config(self) -> HuviConfig:
        if not self.exists():
            raise HuviError(f"{self.root} is not a huvi run (no config.yaml); give the folder passed to train --out.")
        return HuviConfig.from_dict(yaml.safe_load(self.config_path.read_text()))

    # metrics ---------------------------------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every complete row; a last line cut short by a crash is skipped."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def last_metrics(self, stage: str) -> dict:
        """The newest complete metrics row of `stage` ({} when there is none)."""
        rows = [r for r in self.read_metrics() if r.get("stage") == stage]
        return rows[-1] if rows else {}

    def truncate_metrics(self, stage: str, step: int) -> None:
        """Drop rows written after (stage, step), the point a resumed run goes on from."""
        limit = (STAGES.index(stage), step)
        keep = [r for r in self.read_metrics() if (STAGES.index(r["stage"]), r["step"]) <= limit]
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def remove_temporaries(self) -> None:
        """Delete the half-written adapters, checkpoints and previews a killed process left: the
        `.NAME.*.tmp*` files of huvi.io and the `.STAGE-STEP.tmp` folders of `save_checkpoint`.
        (The run folder's own small files are left alone: the app may be rewriting job.json.)"""
        for folder in (self.root / "adapters", self.checkpoints, self.root / "previews", self.best_folder):
            for path in folder.glob(".*.tmp*") if folder.is_dir() else ():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                logger.info("removed %s, left by an interrupted write", path.relative_to(self.root))

    # checkpoints -----------------------------------------------------------------------------
    def list_checkpoints(self) -> list[CheckpointRef]:
        if not self.checkpoints.is_dir():
            return []
        refs = []
        for path in self.checkpoints.iterdir():
            match = _CKPT.fullmatch(path.name)
            if match and (path / "state.json").is_file():
                refs.append(CheckpointRef(path, match[1], int(match[2])))
        return sorted(refs, key=lambda r: r.order)

    def latest_checkpoint(self) -> CheckpointRef | None:
        refs = self.list_checkpoints()
        return refs[-1] if refs else None

    def save_checkpoint(self, stage: str, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict, keep: int) -> Path:
        """Write `tensors` (file stem -> tensors) and `state` as checkpoint (stage, step), atomically."""
        final = self.checkpoints / f"{stage}-{step:06d}"
        tmp = self.checkpoints / f".{final.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for stem, group in tensors.items():
            write_safetensors(tmp / f"{stem}.safetensors", group)
        write_json(tmp / "state.json", state)
        publish_dir(tmp, final)
        for old in self.list_checkpoints()[:-keep]:
            shutil.rmtree(old.path, ignore_errors=True)
        return final

    @staticmethod
    def load_checkpoint(ref: CheckpointRef) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        tensors = {p.stem: load_file(str(p)) for p in ref.path.glob("*.safetensors")}
        return tensors, json.loads((ref.path / "state.json").read_text())


def optimizer_to_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into safetensors-ready tensors and a JSON-ready rest.

    Per-parameter state may nest: bitsandbytes' 8-bit AdamW keeps its quantized moments, maps and
    scales under `__bnb_optimizer_quant_state__`. Every tensor, at any depth, is stored under its
    dotted path ("0.exp_avg", "0.__bnb_optimizer_quant_state__.state1"), every other value under
    the same path in `scalars`.
    """
    tensors, scalars = {}, {}

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            if "." in str(key):
                raise ValueError(f"optimizer state key {key!r} contains a dot")
            flat = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict):
                walk(value, flat)
            elif torch.is_tensor(value):
                tensors[flat] = value
            else:
                scalars[flat] = value

    walk(state_dict["state"], "")
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """The optimizer state_dict that `optimizer_to_tensors` split: parameter ids back to ints, nesting restored."""
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(rest["scalars"].items()):
        pid, *keys = flat.split(".")
        node = state.setdefault(int(pid), {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return {"state": state, "param_groups": rest["param_groups"]}
