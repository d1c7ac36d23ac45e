"""`python -m huvi bench`: memory, speed and FLOPs of one training step, huvi's and the naive one,
and what loading a preset's model costs. One JSON line per configuration.

Steps run on a preset's model with random weights (no download: the full-size SD1.5 UNet, VAE and
text encoder and the AnimateDiff v1-5-2 MotionAdapter come from the JSON configs in
`huvi/configs/`, see huvi.families.sd15.full_size; the tiny preset uses huvi.families.sd15.tiny), at the preset's frames and
resolution. `--load` instead loads the preset's real weights (Hub ids or folders), as training does.

    step.py       one step as the trainer composes it, or as published video-DPO code does (`--naive`:
                  a deep-copied reference, no checkpointing, fp32 AdamW, no caching); the ratio
                  naive/huvi isolates those four choices
    measure.py    warm-up plus N timed steps: memory, speed, MFU (`--naive` in the same process)
    estimate.py   `--estimate`: peak memory and FLOPs counted on the meta device, nothing run
    profile.py    `--profile DIR`: a few more steps under torch.profiler, the operators' table
    load.py       `--load`: load time and peak host memory of loading a preset's weights and its first step
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from huvi.bench.estimate import estimate
from huvi.bench.load import measure_load
from huvi.bench.measure import measure, peak_tflops, with_ratios
from huvi.bench.step import STAGES
from huvi.config import HuviConfig, load_config, parse_overrides, preset_names
from huvi.precision import default_preset

logger = logging.getLogger("huvi.bench")


@dataclass(frozen=True)
class BenchRequest:
    """What `python -m huvi bench` was asked (huvi.cli parses it)."""

    presets: list[str] = field(default_factory=list)  # empty: the machine's default preset
    all_presets: bool = False
    stage: str = "both"  # motion, dpo or both
    steps: int = 10  # timed steps after the warm-up
    warmup: int = 3
    naive: bool = False  # also the published-code baseline, with naive/huvi ratios
    estimate: bool = False  # meta-device estimates instead of steps
    load: bool = False  # load the preset's weights and run its first step: load time and peak host memory
    overrides: list[str] = field(default_factory=list)  # --set key=value
    peak_tflops: float | None = None  # the device's peak bf16 TFLOP/s when not in the built-in table
    profile: Path | None = None  # a folder: profile a few steps after the timed ones (huvi.bench.profile)


def configs(request: BenchRequest) -> Iterator[HuviConfig]:
    presets = preset_names() if request.all_presets else (request.presets or [default_preset()])
    overrides = parse_overrides(request.overrides)
    for preset in presets:
        yield load_config(preset, overrides)


def run(request: BenchRequest, emit: Callable[[dict], None]) -> None:
    stages = STAGES if request.stage == "both" else (request.stage,)
    cuda = torch.cuda.is_available()
    peak = request.peak_tflops or (peak_tflops(torch.cuda.get_device_name()) if cuda else None)
    if cuda and peak is None and not (request.estimate or request.load):
        logger.warning("%s is not in huvi.bench.measure.PEAK_BF16_TFLOPS; give --peak-tflops to get MFU.", torch.cuda.get_device_name())
    for cfg in configs(request):
        if request.load:
            emit({"kind": "load"} | measure_load(cfg, stages[-1]))
            continue
        if not cuda and cfg.model.source != "tiny" and not request.estimate:
            logger.warning("%s on the CPU builds the full-size model in fp32 and takes minutes a step; use --preset tiny or --estimate.", cfg.preset)
        for stage in stages:
            if request.estimate:
                variants = [(False, cfg.model.gradient_checkpointing)]
                if cfg.model.gradient_checkpointing:
                    variants.append((False, False))
                if request.naive:
                    variants.append((True, False))
                for naive, checkpointing in variants:
                    emit(estimate(cfg, stage, naive, checkpointing))
                continue
            row = measure(cfg, stage, False, request.steps, request.warmup, peak, request.profile)
            emit({"kind": "measured"} | row)
            if request.naive:
                emit({"kind": "measured"} | with_ratios(measure(cfg, stage, True, request.steps, request.warmup, peak, request.profile), row))
