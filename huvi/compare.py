"""Runs side by side: the settings in which they differ and how each ended.

`compare_runs` reads each run folder's config.yaml, run.json and metrics.jsonl (huvi.runs) and
returns one `RunFacts` per run plus the names of the settings whose values are not the same in all
of them, so a table of runs shows what was changed and what it did. The end figures are means over
the last `TAIL` steps of a stage (single steps are noisy); held-out accuracy is its last score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huvi.errors import HuviError
from huvi.runs import STAGES, Run

TAIL = 20  # steps averaged for a stage's end figures


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"dpo": {"beta": 5000}} -> {"dpo.beta": 5000}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows[-TAIL:] if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class RunFacts:
    name: str
    category: str  # the category folder's name ("" when not recorded)
    settings: dict[str, Any]  # the resolved config, flattened to dotted names
    steps: dict[str, int] = field(default_factory=dict)  # stage -> last step logged
    end: dict[str, float | None] = field(default_factory=dict)  # figure -> its value at the end (see `run_facts`)
    seconds: float = 0.0  # training time logged over all steps

    @property
    def trained(self) -> list[str]:
        return [stage for stage in STAGES if self.steps.get(stage)]


def run_facts(run_dir: Path) -> RunFacts:
    """What one run was and how it ended; a HuviError when the folder is not a started run."""
    run = Run(run_dir)
    cfg = run.read_config()
    rows = run.read_metrics()
    by_stage = {stage: [r for r in rows if r.get("stage") == stage] for stage in STAGES}
    dpo = by_stage["dpo"]
    held_out = [r["val_accuracy"] for r in dpo if isinstance(r.get("val_accuracy"), (int, float))]
    end = {
        "motion loss": _mean(by_stage["motion"], "loss"),
        "DPO loss": _mean(dpo, "loss"),
        "accuracy": _mean(dpo, "accuracy"),
        "reward margin": _mean(dpo, "reward_margin"),
        "held-out accuracy": held_out[-1] if held_out else None,
    }
    return RunFacts(
        name=run.root.name,
        category=Path(run.read_info().get("category") or "").name,
        settings=flatten(cfg.to_dict()),
        steps={stage: max((int(r.get("step", 0)) for r in stage_rows), default=0) for stage, stage_rows in by_stage.items()},
        end=end,
        seconds=sum(float(r.get("seconds", 0.0)) for r in rows),
    )


def compare_runs(run_dirs: list[Path]) -> tuple[list[RunFacts], list[str]]:
    """The facts of each started run among `run_dirs` (others are skipped) and the settings that differ
    between them, in config order."""
    facts = []
    for run_dir in run_dirs:
        try:
            facts.append(run_facts(run_dir))
        except HuviError:
            continue
    names = list(dict.fromkeys(name for f in facts for name in f.settings))
    differ = [name for name in names if len({repr(f.settings.get(name)) for f in facts}) > 1]
    return facts, differ
