"""The `python -m huvi train` line: the request the app and the CLI train (`TrainRequest`), its
argv, the line shown to copy, and the request that trains an existing run again (`run_request`),
rebuilt from the run's own config.yaml so that a run started from a shell, or resumed, still shows
the settings it trains with.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from huvi.config import HuviConfig, load_config
from huvi.errors import HuviError
from huvi.runs import STAGES, Run


@dataclass(frozen=True)
class TrainRequest:
    category: Path
    run: Path
    preset: str
    overrides: tuple[str, ...] = ()  # "key=value", as `--set`
    stages: tuple[str, ...] = STAGES
    mode: str = "clip"  # dpo.mode: "clip" (rating pairs) or "dense" (segment-labelled pairs)

    def __post_init__(self) -> None:
        if self.mode not in ("clip", "dense"):
            raise HuviError(f"DPO mode {self.mode!r} is unknown; use \"clip\" (ratings) or \"dense\" (segment labels).")

    @property
    def stage_arg(self) -> str:
        return "both" if tuple(self.stages) == STAGES else self.stages[0]


def train_argv(request: TrainRequest, python: str = sys.executable) -> list[str]:
    """The CLI command that trains `request`."""
    argv = [python, "-m", "huvi", "train", "--category", str(request.category), "--out", str(request.run), "--preset", request.preset]
    if request.stage_arg != "both":
        argv += ["--stage", request.stage_arg]
    if request.mode != "clip":
        argv += ["--mode", request.mode]
    for override in request.overrides:
        argv += ["--set", override]
    return argv


def resume_argv(category: Path, run: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "huvi", "train", "--category", str(category), "--out", str(run), "--resume"]


def display_command(argv: list[str], cwd: Path | None = None) -> str:
    """`argv` as a shell line to copy: `python` for the interpreter, paths relative to `cwd` when inside it."""
    cwd = Path(cwd or Path.cwd()).resolve()

    def short(arg: str) -> str:
        path = Path(arg)
        if path.is_absolute():
            try:
                return str(path.resolve().relative_to(cwd))
            except ValueError:
                return arg
        return arg

    return shlex.join(["python", *[short(a) for a in argv[1:]]])


def run_request(run: Path, job: dict | None = None) -> TrainRequest:
    """The request that trains a run like `run` again: its category (`job`, the run's job.json, or
    its run.json), preset, stages and DPO mode, and every setting of its config.yaml that differs
    from the preset's as an override. A HuviError when the folder is not a started run."""
    run = Path(run)
    cfg = Run(run).read_config()
    job = job or {}
    category = job.get("category") or Run(run).read_info().get("category")
    if not category:
        raise HuviError(f"{run.name} does not record its category.")
    stages = tuple(s for s in STAGES if s in (job.get("stages") or STAGES))
    return TrainRequest(Path(category), run, cfg.preset, tuple(config_overrides(cfg)), stages, cfg.dpo.mode)


_PLAIN = re.compile(r"[\w./:-]+")  # a string --set reads back as itself; others are written as JSON (which YAML reads)


def config_overrides(cfg: HuviConfig) -> list[str]:
    """`key=value` for every setting of `cfg` that differs from its preset's (dpo.mode and preset left
    out: a request carries them itself), in the config's own order."""
    try:
        base = load_config(cfg.preset).to_dict()
    except HuviError:  # a preset file that has moved: every setting is spelled out
        base = {}
    out = []

    def walk(node: dict, ref: dict, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, ref.get(key) or {}, f"{name}.")
            elif name not in ("preset", "dpo.mode") and (key not in ref or ref[key] != value):
                plain = isinstance(value, str) and _PLAIN.fullmatch(value)
                out.append(f"{name}={value if plain else json.dumps(value)}")

    walk(cfg.to_dict(), base, "")
    return out


def first_command(run: Path, job: dict | None) -> str:
    """The `train` line that set the run's settings: job.json's, else rebuilt from config.yaml ("" when neither)."""
    if job and job.get("first_command"):
        return job["first_command"]
    if job and job.get("command") and not job.get("resumed"):
        return job["command"]
    try:
        return display_command(train_argv(run_request(run, job)))
    except HuviError:
        return ""
