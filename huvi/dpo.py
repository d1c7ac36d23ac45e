"""Denoising errors of first-frame-conditioned clips, and the Diffusion-DPO forward pass on one model.

The noising, the target and the model call are the model family's (huvi.families.base); the
errors, the reference (the same model with only the motion adapter) and the batch order are not."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch

from huvi.adapters import MOTION, active_adapters
from huvi.diffusion import per_sample_error
from huvi.families.base import ModelFamily
from huvi.segments import segment_errors

Reduce = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (pred, target) -> errors


def denoising_errors(
    model: torch.nn.Module, family: ModelFamily, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, reduce: Reduce = per_sample_error
) -> torch.Tensor:
    """Error of predicting the target from the noisy clip, per sample: (b,) (or what `reduce`
    returns, e.g. (b, s) per segment with `huvi.segments.segment_errors`).

    latents, noise: (b, c, f, h, w); timesteps: (b,); text: (b, tokens, dim). Frame 0 stays clean
    in the input and is left out of the error.
    """
    noisy = family.noisy_input(latents, noise, timesteps)
    target = family.target(latents, noise, timesteps)
    return reduce(family.predict(model, noisy, timesteps, text), target)


def pair_errors(
    model: torch.nn.Module,
    base: torch.nn.Module,
    family: ModelFamily,
    latents_w: torch.Tensor,
    latents_l: torch.Tensor,
    text: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample denoising errors (model_w, model_l, ref_w, ref_l), each (n,), or with segment
    `masks` (n, s, f) per-segment errors, each (n, s) (DenseDPO; w and l are then clips a and b).

    latents_w, latents_l, noise: (n, c, f, h, w); timesteps: (n,); text: (tokens, dim).
    Winner and loser share the noise and timestep and run as one doubled batch, [winners; losers].
    The reference is `base` (the same module as `model`, unwrapped from any DDP wrapper) with only
    the motion adapter active, under no_grad.
    """
    n = latents_w.shape[0]
    latents = torch.cat([latents_w, latents_l])  # (2n, c, f, h, w): [winners; losers]
    noise = noise.repeat(2, 1, 1, 1, 1)  # (2n, c, f, h, w), one noise per pair
    timesteps = timesteps.repeat(2)  # (2n,)
    text = text.unsqueeze(0).expand(2 * n, -1, -1)  # (2n, tokens, dim)
    reduce = per_sample_error if masks is None else partial(segment_errors, masks=masks.repeat(2, 1, 1))  # masks: (2n, s, f)
    with torch.no_grad(), active_adapters(base, [MOTION]), autocast():
        ref = denoising_errors(base, family, latents, noise, timesteps, text, reduce)  # (2n,) or (2n, s)
    with autocast():
        err = denoising_errors(model, family, latents, noise, timesteps, text, reduce)
    model_w, model_l = err.chunk(2)
    ref_w, ref_l = ref.chunk(2)
    return model_w, model_l, ref_w, ref_l
