"""Markdown rows for docs/BENCHMARKS.md from the JSON lines `python -m huvi bench` printed.

    python examples/bench_table.py bench.jsonl [more.jsonl ...]

Measured lines become rows of the GPU table (preset, stage, huvi or naive, peak memory, step time,
TFLOP/s, MFU, naive/huvi ratios); `--load` lines rows of the loading table. The device, versions
and date of the first line head the output, so the figures are never copied without them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MEASURED = "| preset | stage | step | peak allocated GiB | peak reserved GiB | s/step median (p10–p90) | TFLOP/s | MFU | naive/huvi memory | naive/huvi time |"
LOAD = "| preset | precision | frames, size | load UNet s | load all s | first step s | peak host RSS GiB (load / with step) |"


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def measured_row(row: dict) -> str:
    timing = f"{_cell(row['step_s_median'])} ({_cell(row['step_s_p10'])}–{_cell(row['step_s_p90'])})"
    if row.get("error"):
        timing += f" ({row['error']})"
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "–"
    cells = [
        row["preset"], row["stage"], "naive" if row["naive"] else "huvi", _cell(row["gpu_peak_allocated_gib"]), _cell(row["gpu_peak_reserved_gib"]),
        timing, _cell(row["achieved_tflops"]), mfu, _cell(row.get("naive_over_huvi_memory")), _cell(row.get("naive_over_huvi_time")),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def load_row(row: dict) -> str:
    cells = [
        row["preset"], row["precision"], f"{row['frames']}, {row['resolution']}", _cell(row["load_unet_s"]), _cell(row["load_s"]),
        _cell(row["first_step_s"]), f"{_cell(row['cpu_peak_rss_load_gib'])} / {_cell(row['cpu_peak_rss_gib'])}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def render(rows: list[dict]) -> str:
    if not rows:
        return "No bench lines.\n"
    first = rows[0]
    versions = ", ".join(f"{k} {first[k]}" for k in ("torch", "cuda", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes") if first.get(k))
    out = [f"Device: {first['device']} ({_cell(first.get('gpu_memory_gib'))} GiB). {versions}. Date: {first['date']}.", ""]
    for header, kind, make in ((MEASURED, "measured", measured_row), (LOAD, "load", load_row)):
        lines = [make(r) for r in rows if r.get("kind") == kind]
        if lines:
            out += [header, "|" + " --- |" * header.count("|", 1), *lines, ""]
    return "\n".join(out)


def main(paths: list[str]) -> int:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.startswith("{")]
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
