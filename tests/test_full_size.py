"""The real path at full size: examples/full_size_check.py on random full-size model folders.

Marked slow: the README's test command leaves them out, `.ci/run` runs them after (`python -m pytest
-m slow`). The weights are written once to $HUVI_TEST_WEIGHTS (default /tmp/huvi-full-size-weights)
and reused: SD1.5 + AnimateDiff ~6 GB (about 3 minutes a preset on 2 cores), Wan 2.1 T2V-1.3B +
Wan 2.2 TI2V-5B ~19 GB (about 3 and 5 minutes on 2 shared cores, 3 minutes to write them). The
figures they print (load seconds, peak host memory, seconds until a second Generate click samples)
are benchmarks, read, not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = ["train", "evaluate", "generate", "dense-pairs", "export", "load", "again"]
WAN_STEPS = ["train", "evaluate", "generate", "export"]


def full_size_check(presets: list[str], work: Path) -> list[dict]:
    """Run the check on `presets`; its JSON lines, after asserting it passed every preset."""
    weights = os.environ.get("HUVI_TEST_WEIGHTS") or str(Path(tempfile.gettempdir()) / "huvi-full-size-weights")
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "full_size_check.py"), "--weights", weights, "--work", str(work), "--presets", *presets],
        cwd=REPO, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print("\n".join(json.dumps(row) for row in rows))  # the figures, in pytest's report with -s or on failure
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = rows[-1]
    assert summary["summary"] == "passed" and summary["presets"] == presets
    return rows


def steps_done(rows: list[dict], preset: str) -> list[str]:
    return [row["step"] for row in rows if row.get("preset") == preset]


@pytest.mark.slow
def test_every_gpu_preset_runs_the_real_path_at_full_size(tmp_path):
    presets = ["sd15-24gb", "sd15-16gb", "sd15-12gb"]
    rows = full_size_check(presets, tmp_path)
    for preset in presets:
        assert steps_done(rows, preset) == STEPS, preset
        load = next(row for row in rows if row.get("preset") == preset and row["step"] == "load")
        assert load["precision"] == "bf16" and load["cpu_peak_rss_gib"] > 0


@pytest.mark.slow
def test_the_wan_presets_run_the_real_path_at_full_size(tmp_path):
    presets = ["wan21-1.3b", "wan22-5b"]
    rows = full_size_check(presets, tmp_path)
    for preset in presets:
        assert steps_done(rows, preset) == WAN_STEPS, preset
        train = next(row for row in rows if row.get("preset") == preset and row["step"] == "train")
        assert train["killed_after"] == "motion-000001" and train["resumed_to"] == ["dpo", 1], preset
