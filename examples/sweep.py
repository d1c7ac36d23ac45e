"""What the sweep scripts of examples/ share: a work folder, one CPU thread a worker, and stages
that a rerun reuses.

A sweep trains one motion stage per category and several DPO stages from copies of it. Each
stage's run folder keeps the config it was trained with (config.yaml) and, for a DPO stage, the
figures the sweep measured (result.json); a rerun with the same --work reuses every stage whose
settings are still the ones asked for, and trains again the ones whose settings changed (a preset
default that moved, a new --set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from huvi.config import PAIR_SETTINGS

MOTION_SETTINGS = ("seed", "precision", "model", "data", "motion", "optim")  # what a motion stage's result depends on
# ... but for data's PAIR_SETTINGS: a sweep over them (or over any dpo.* setting) reuses the motion stage


def motion_overrides(overrides: list[str]) -> list[str]:
    """The --set overrides a motion stage depends on: all but dpo.* and data's PAIR_SETTINGS."""
    return [s for s in overrides if not s.startswith(("dpo.", *(f"data.{name}=" for name in PAIR_SETTINGS)))]


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """--jobs and --work, as every sweep script here takes them."""
    parser.add_argument("--jobs", type=int, default=2, help="stages trained at once (one CPU thread each)")
    parser.add_argument("--work", type=Path, help="folder for categories and runs (default: a temporary one)")


def add_control_options(parser: argparse.ArgumentParser) -> None:
    """--control and --no-control, for the sweeps that train a control beside each rated run."""
    parser.add_argument(
        "--control", default="blind", choices=("blind", "shuffled"),
        help="the control's ratings: blind (both clips of a couple rated alike, huvi.synthetic.blind_ratings) "
        "or shuffled (each side given the same ratings, huvi.synthetic.shuffled_ratings; the control before 2026-12-06)",
    )  # fmt: skip
    parser.add_argument("--no-control", action="store_true", help="skip the control runs (a first look at a setting)")


def rate_control(category: Path, control: str, seed: int) -> None:
    """Rate `category` (written in couples) blind to its preference, as `--control` asks."""
    from huvi.synthetic import blind_ratings, shuffled_ratings

    {"blind": blind_ratings, "shuffled": shuffled_ratings}[control](category, seed=seed)


def sweep_folder(work: Path | None, prefix: str) -> Path:
    """The sweep's folder (a temporary one when `work` is None), offline, one thread a process,
    with its latent cache inside."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    work = work or Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("HUVI_CACHE", str(work / "cache"))
    return work


def worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def trained_with(run: str | Path, cfg, settings: tuple[str, ...] | None = None) -> bool:
    """Whether `run` was trained with `cfg` (all of it, or only `settings`), so a sweep may reuse it;
    a run from before a preset's defaults changed is trained again."""
    from huvi.runs import Run

    previous = Run(Path(run))
    if not previous.exists():
        return False
    done = previous.read_config()
    if not settings:
        return done == cfg
    if "data" in settings:  # the pair settings aside
        done = dataclasses.replace(done, data=dataclasses.replace(done.data, **{name: getattr(cfg.data, name) for name in PAIR_SETTINGS}))
    return all(getattr(done, name) == getattr(cfg, name) for name in settings)


def motion_stage(preset: str, overrides: list[str], category: str, run: str) -> float:
    """The motion stage, unless `run` already holds it with these settings (a sweep of DPO settings
    reuses it); the seconds it took (0 when reused)."""
    from huvi.config import load_config
    from huvi.runs import Run
    from huvi.trainer import train

    cfg = load_config(preset, overrides)
    if Run(Path(run)).adapter_path("motion").is_file() and trained_with(run, cfg, MOTION_SETTINGS):
        return 0.0
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    train(cfg, Path(category), Path(run), stages=["motion"], show_progress=False)
    return time.perf_counter() - start


def reused_result(run: str | Path, cfg) -> dict | None:
    """The figures kept in RUN/result.json when the run was trained with `cfg`, else None."""
    done = Path(run, "result.json")
    return json.loads(done.read_text()) if done.is_file() and trained_with(run, cfg) else None


def dpo_from_motion(motion_run: str | Path, category: str | Path, run: str | Path, cfg) -> float:
    """DPO with `cfg` on `category`, in a fresh copy of the motion run; the seconds it took."""
    from huvi.runs import Run
    from huvi.trainer import train

    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(motion_run, run)
    Run(Path(run)).write_config(cfg)
    start = time.perf_counter()
    train(cfg, Path(category), Path(run), stages=["dpo"], resume=True, show_progress=False)
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    """mean ± standard deviation (min-max)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f} ({min(values):.2f}-{max(values):.2f})"
