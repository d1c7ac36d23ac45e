"""Device, precision and CPU-thread choices shared by training, evaluation and generation."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


GPU_PRESET, CPU_PRESET = "sd15-24gb", "demo"  # CPU: the demo model that ships with huvi (the tests use tiny, built in code)


def default_preset() -> str:
    """The preset for this machine when none is given: GPU_PRESET with a CUDA GPU, CPU_PRESET without."""
    return GPU_PRESET if torch.cuda.is_available() else CPU_PRESET


def resolve_precision(precision: str) -> str:
    """"auto" -> bf16 on GPUs that support it, fp16 on other GPUs, "no" (fp32) on CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def precision_name(precision: str) -> str:
    """A resolved precision as a reader says it: "no" (accelerate's word for no mixed precision) is fp32."""
    return "fp32" if precision == "no" else precision


def weight_dtype(precision: str) -> torch.dtype:
    """dtype of the frozen weights under a resolved precision."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def make_accelerator(precision: str):
    """accelerate's Accelerator at `precision` (resolved or "auto"), on the GPU when there is one.

    accelerate keeps one mixed precision per process and refuses another ("restart your runtime");
    a process that trains twice at different precisions (a notebook, the tests) starts the second
    from a fresh precision state. The distributed state (which process is which) is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = resolve_precision(precision)
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())


def cpu_load() -> tuple[int, float]:
    """(cores this process may use, the 1-minute load average: how many of them other work keeps busy)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return cores, load


def free_cores(cores: int, load: float) -> int:
    """Cores left to a new job: the usable ones less those other work keeps busy, at least 1.

    Intra-op threads beyond the free cores spin-wait on busy ones: on 2 cores shared with another
    job, 2 threads made steps several times slower than 1."""
    return max(1, min(cores, round(cores - load)))


def set_cpu_threads() -> None:
    """On a CPU-only machine, train with as many intra-op threads as cores are free now (an
    OMP_NUM_THREADS in the environment wins); says what it chose in the log."""
    if torch.cuda.is_available():
        return
    cores, load = cpu_load()
    if os.environ.get("OMP_NUM_THREADS"):
        logger.info("CPU threads: %d (OMP_NUM_THREADS; %d cores, load %.1f)", torch.get_num_threads(), cores, load)
        return
    threads = free_cores(cores, load)
    torch.set_num_threads(threads)
    logger.info("CPU threads: %d of %d cores (load %.1f from other work now)", threads, cores, load)
