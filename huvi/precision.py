"""Device and precision choices shared by training, evaluation and generation."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
