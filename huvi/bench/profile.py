"""`bench --profile DIR`: where a configuration's step time goes, operator by operator.

A few more steps after the timed ones run under `torch.profiler` (the timed figures are taken
without it). The operators' table, sorted by their own time on the device (the CPU's without a
GPU), goes to DIR/<preset>-<stage>[-naive].txt, and the line gets the launches per step: many small
kernels, not FLOPs, are what keeps a step far below the device's peak when MFU is low.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity

PROFILED_STEPS = 2
ROWS = 40


def profile_steps(run_step: Callable[[int], None], out: Path, cuda: bool, steps: int = PROFILED_STEPS) -> dict:
    """Run `run_step(i)` for `steps` steps under the profiler; write its table to `out` and return
    the line's profile fields."""
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(steps):
            run_step(i)
            if cuda:
                torch.cuda.synchronize()
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{steps} steps under torch.profiler, sorted by {sort}\n{events.table(sort_by=sort, row_limit=ROWS)}\n")
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    operators = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.key.startswith("aten::"))
    return {
        "profile": str(out),
        "profile_kernels_per_step": round(kernels / steps) if cuda else None,  # device kernels launched
        "profile_aten_ops_per_step": round(operators / steps),  # PyTorch operators called on the CPU side
    }
