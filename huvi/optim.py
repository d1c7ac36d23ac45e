"""Optimizer and learning-rate schedule of a stage."""

from __future__ import annotations

import logging
import math
from functools import cache

import torch

from huvi.config import OptimConfig, StageConfig

logger = logging.getLogger(__name__)


@cache
def _adamw8bit():
    """bitsandbytes' 8-bit AdamW, or None (said once) when it cannot be imported."""
    try:
        import bitsandbytes as bnb
    except Exception as err:  # ImportError, or a broken CUDA setup raising RuntimeError
        logger.warning("bitsandbytes 8-bit AdamW is unavailable (%s); using plain AdamW.", err)
        return None
    return bnb.optim.AdamW8bit


def make_optimizer(params: list[torch.nn.Parameter], stage: StageConfig, optim: OptimConfig) -> torch.optim.Optimizer:
    kwargs = dict(lr=stage.learning_rate, betas=(optim.beta1, optim.beta2), eps=optim.eps, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw8bit" and (cls := _adamw8bit()) is not None:
        return cls(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def lr_factor(step: int, stage: StageConfig) -> float:
    """Multiplier of the base learning rate at optimizer step `step`: linear warmup, then constant or cosine to 0."""
    if step < stage.warmup_steps:
        return (step + 1) / (stage.warmup_steps + 1)
    if stage.lr_schedule == "constant":
        return 1.0
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_lr_schedule(optimizer: torch.optim.Optimizer, stage: StageConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, stage))
