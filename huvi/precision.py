"""Device and precision choices shared by training, evaluation and generation."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_preset() -> str:
    """The preset for this machine when none is given: sd15-24gb with a CUDA GPU, tiny on a CPU."""
    return "sd15-24gb" if torch.cuda.is_available() else "tiny"


def resolve_precision(precision: str) -> str:
    """"auto" -> bf16 on GPUs that support it, fp16 on other GPUs, "no" (fp32) on CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


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
