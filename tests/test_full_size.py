"""The real path at full size: examples/full_size_check.py on random SD1.5 + AnimateDiff folders.

Marked slow (about 3 minutes a preset on 2 cores, ~6 GB of weights written once to
$HUVI_TEST_WEIGHTS, default /tmp/huvi-full-size-weights): the README's test command leaves it out,
`.ci/run` runs it after (`python -m pytest -m slow`). The figures it prints (load seconds, peak host
memory, seconds until a second Generate click samples) are benchmarks, read, not asserted.
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


@pytest.mark.slow
def test_every_gpu_preset_runs_the_real_path_at_full_size(tmp_path):
    weights = os.environ.get("HUVI_TEST_WEIGHTS") or str(Path(tempfile.gettempdir()) / "huvi-full-size-weights")
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "full_size_check.py"), "--weights", weights, "--work", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=3600, check=False,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print("\n".join(json.dumps(row) for row in rows))  # the figures, in pytest's report with -s or on failure
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = rows[-1]
    assert summary["summary"] == "passed" and summary["presets"] == ["sd15-24gb", "sd15-16gb", "sd15-12gb"]
    for preset in summary["presets"]:
        done = [row["step"] for row in rows if row.get("preset") == preset]
        assert done == STEPS, (preset, done)
        load = next(row for row in rows if row.get("preset") == preset and row["step"] == "load")
        assert load["precision"] == "bf16" and load["cpu_peak_rss_gib"] > 0
