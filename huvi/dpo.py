"""The Diffusion-DPO forward pass on one UNet: trained model and reference from the same weights."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from huvi.adapters import MOTION, active_adapters
from huvi.diffusion import first_frame_noisy, per_sample_error, predict, prediction_target


def pair_errors(
    model: torch.nn.Module,
    base: torch.nn.Module,
    scheduler,
    latents_w: torch.Tensor,
    latents_l: torch.Tensor,
    text: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample denoising errors (model_w, model_l, ref_w, ref_l), each (n,).

    latents_w, latents_l, noise: (n, c, f, h, w); timesteps: (n,); text: (tokens, dim).
    Winner and loser share the noise and timestep and run as one doubled batch, [winners; losers].
    The reference is `base` (the same module as `model`, unwrapped from any DDP wrapper) with only
    the motion adapter active, under no_grad. Frame 0 is clean and excluded from every error.
    """
    n = latents_w.shape[0]
    latents = torch.cat([latents_w, latents_l])  # (2n, c, f, h, w): [winners; losers]
    noise = noise.repeat(2, 1, 1, 1, 1)  # (2n, c, f, h, w), one noise per pair
    timesteps = timesteps.repeat(2)  # (2n,)
    noisy = first_frame_noisy(latents, noise, timesteps, scheduler)
    target = prediction_target(latents, noise, timesteps, scheduler)
    text = text.unsqueeze(0).expand(2 * n, -1, -1)  # (2n, tokens, dim)

    with torch.no_grad(), active_adapters(base, [MOTION]), autocast():
        ref = per_sample_error(predict(base, noisy, timesteps, text), target)  # (2n,)
    with autocast():
        err = per_sample_error(predict(model, noisy, timesteps, text), target)  # (2n,)
    model_w, model_l = err.chunk(2)
    ref_w, ref_l = ref.chunk(2)
    return model_w, model_l, ref_w, ref_l
