"""Measured steps: memory, speed, MFU of a preset's training step on this machine, huvi's and naive."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gc
import logging
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch

from huvi.adapters import adapter_parameters
from huvi.bench.estimate import count_flops
from huvi.bench.profile import profile_steps
from huvi.bench.step import GIB, build_setup, describe, gib, train_step
from huvi.config import HuviConfig
from huvi.optim import make_lr_schedule, make_optimizer
from huvi.precision import make_accelerator, weight_dtype

logger = logging.getLogger("huvi.bench")


# Peak dense bf16 tensor-core TFLOP/s (vendor datasheets, without sparsity; fp32 accumulation
# for GeForce cards, whose fp16-accumulate figure is twice this). First substring of the CUDA
# device name that matches wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense bf16 TFLOP/s from PEAK_BF16_TFLOPS, or None when it is not listed."""
    return next((value for key, value in PEAK_BF16_TFLOPS if key in device_name), None)


def reset_peak_rss() -> bool:
    """Start a new peak of this process's resident memory (Linux: /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    try:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """Device and library versions of a result line."""
    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 2) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
    } | {package: _version(package) for package in ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes")}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _flops(cfg: HuviConfig, stage: str, naive: bool) -> tuple[int, int]:
    """(model FLOPs, hardware FLOPs) of one step: without and with checkpoint recomputation."""
    hardware = count_flops(cfg, stage, naive).total
    if naive or not cfg.model.gradient_checkpointing:
        return hardware, hardware
    return count_flops(cfg, stage, naive, checkpointing=False).total, hardware


def measure(cfg: HuviConfig, stage: str, naive: bool, steps: int, warmup: int, peak: float | None, profile: Path | None = None) -> dict:
    """Warm up, time `steps` optimizer steps of `stage`, and return the result line; with `profile`
    (a folder), profile a few more steps there (huvi.bench.profile)."""

    accelerator = make_accelerator(cfg.precision)
    device, dtype = accelerator.device, weight_dtype(accelerator.mixed_precision)
    cuda = device.type == "cuda"
    scfg = cfg.stage(stage)
    row = environment(device) | describe(cfg, stage, naive, cfg.model.gradient_checkpointing and not naive)
    logger.info("%s %s%s: building", cfg.preset, stage, " (naive)" if naive else "")
    setup = build_setup(cfg, stage, naive, device, dtype)
    params = adapter_parameters(setup.unet, stage)
    optim_cfg = dataclasses.replace(cfg.optim, optimizer="adamw") if naive else cfg.optim  # naive: fp32 torch AdamW
    optimizer = make_optimizer(params, scfg, optim_cfg)
    schedule = make_lr_schedule(optimizer, scfg)
    setup.model, optimizer = accelerator.prepare(setup.unet, optimizer)
    setup.model.train()
    setup.autocast = accelerator.autocast
    unique = {t.untyped_storage().data_ptr(): t.numel() for m in setup.modules() for t in m.parameters()}
    row |= {
        "precision": accelerator.mixed_precision,
        "optimizer": type(optimizer.optimizer).__name__,
        "params_total": sum(unique.values()),  # every parameter held: UNet, a reference copy, encoders
        "params_trainable": sum(p.numel() for p in params),
        "warmup": warmup,
        "steps": steps,
    }
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row["gpu_resident_gib"] = gib(torch.cuda.memory_allocated(device)) if cuda else None  # weights, LoRA, the inputs
    rss_reset = reset_peak_rss()
    times: list[float] = []
    error = None
    try:
        for step in range(warmup + steps):
            t0 = time.perf_counter()
            train_step(setup, accelerator, optimizer, schedule, params, step)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            if step >= warmup:
                times.append(seconds)
            logger.debug("step %d: %.3f s", step + 1, seconds)
    except torch.OutOfMemoryError:
        error = f"out of memory in step {step + 1}"  # the peak memory below is where it stopped
        optimizer.zero_grad(set_to_none=True)
    row |= {
        "gpu_peak_allocated_gib": gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
        "gpu_peak_reserved_gib": gib(torch.cuda.max_memory_reserved(device)) if cuda else None,
        "cpu_peak_rss_gib": gib(peak_rss()) if rss_reset else None,  # host memory of the whole process during the steps
    }
    if profile is not None and error is None:  # after the timings; run_step(i) reuses step i's seeds
        run_step = functools.partial(train_step, setup, accelerator, optimizer, schedule, params)
        row |= profile_steps(run_step, profile / f"{cfg.preset}-{stage}{'-naive' if naive else ''}.txt", cuda)
    accelerator.free_memory()
    del setup, optimizer, schedule, params
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    model_flops, hardware_flops = _flops(cfg, stage, naive)
    median = statistics.median(times) if times else None
    achieved = model_flops / median / 1e12 if median else None
    row |= {
        "step_s_median": round(median, 4) if median else None,
        "step_s_p10": round(_percentile(times, 0.1), 4) if times else None,
        "step_s_p90": round(_percentile(times, 0.9), 4) if times else None,
        "step_s": [round(t, 4) for t in times],
        "flops_per_step": model_flops,
        "hardware_flops_per_step": hardware_flops,
        "flops_method": "FlopCounterMode, one forward+backward on the meta device; model FLOPs exclude checkpoint recomputation, hardware FLOPs include it",
        "achieved_tflops": round(achieved, 3) if achieved else None,
        "peak_tflops": peak if cuda else None,
        "mfu": round(achieved / peak, 4) if achieved and cuda and peak else None,
        "hfu": round(hardware_flops / median / 1e12 / peak, 4) if median and cuda and peak else None,
        "error": error,
    }
    return row


def with_ratios(naive_row: dict, huvi_row: dict) -> dict:
    """The naive line plus naive / huvi ratios of peak memory and median step time."""
    basis = "gpu_peak_allocated_gib" if naive_row["gpu_peak_allocated_gib"] is not None else "cpu_peak_rss_gib"
    memory = time_ = None
    if naive_row[basis] and huvi_row[basis]:
        memory = round(naive_row[basis] / huvi_row[basis], 3)
    if naive_row["step_s_median"] and huvi_row["step_s_median"]:
        time_ = round(naive_row["step_s_median"] / huvi_row["step_s_median"], 3)
    return naive_row | {"naive_over_huvi_memory": memory, "naive_over_huvi_time": time_, "ratio_memory_basis": basis}


