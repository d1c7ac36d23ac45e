"""Wan's flow-matching noising, training target and transformer call, with latent frame 0 clean.

Latent videos are laid out `(b, c, f, h, w)`, as `WanTransformer3DModel` takes them. Latent frame 0
is the causal VAE's code of video frame 0 alone: it is the condition, enters the transformer clean
and is left out of every loss (the trainer's per-sample error skips frame 0).

Rectified flow (Liu et al. 2023; Esser et al. 2024, eq. 2 and 3): x_t = (1 - sigma) x_0 + sigma eps
with sigma in [0, 1], and the transformer predicts the velocity v = eps - x_0. The transformer's
timestep is sigma * 1000, as Wan's schedulers pass it (`num_train_timesteps` 1000), so huvi's
"timesteps" for this family are those values (floats) and sigma = timestep / 1000.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000

# Wan 2.1 T2V-1.3B's scheduler/scheduler_config.json (UniPC on flow sigmas). Its flow_shift 3.0 is the
# 480p value (Wan's own code uses 5.0 at 720p); Wan 2.2 TI2V-5B's config has flow_shift 5.0.
WAN21_SCHEDULER = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
)


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma = shift u / (1 + (shift - 1) u): the shift Wan's schedulers apply to evenly spaced
    sigmas (FlowMatchEulerDiscreteScheduler, UniPC with use_flow_sigmas), here applied to uniform
    draws u, so training sees noise levels in the proportion sampling visits them (shift 3: median
    sigma 0.75)."""
    return shift * u / (1 + (shift - 1) * u)


def sample_timesteps(n: int, shift: float, gen: torch.Generator, low: float = 0.0) -> torch.Tensor:
    """(n,) training timesteps sigma * 1000, sigma shifted from u ~ U[low, 1)."""
    u = low + (1 - low) * torch.rand(n, generator=gen)
    return shifted_sigmas(u, shift) * NUM_TRAIN_TIMESTEPS


def eval_timesteps(samples: int, shift: float, low: float = 0.0) -> torch.Tensor:
    """`samples` timesteps at the shifted centres of equal strata of u in [low, 1), for scoring pairs."""
    u = low + (1 - low) * (torch.arange(samples) + 0.5) / samples
    return shifted_sigmas(u, shift) * NUM_TRAIN_TIMESTEPS


def _sigmas(timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return (timesteps.to(like.device, torch.float32) / NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1, 1)  # (b, 1, 1, 1, 1)


def first_frame_noisy(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - sigma) x_0 + sigma eps on latent frames 1..; latent frame 0 stays x_0.
    latents, noise: (b, c, f, h, w); timesteps: (b,) = sigma * 1000."""
    sigma = _sigmas(timesteps, latents)
    noisy = ((1 - sigma) * latents.float() + sigma * noise.float()).to(latents.dtype)  # (b, c, f, h, w)
    return torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching target v = eps - x_0 (d x_t / d sigma): (b, c, f, h, w)."""
    return noise - latents


def token_timesteps(timesteps: torch.Tensor, latent_shape: torch.Size, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """Per-token timesteps (b, tokens) with the tokens of latent frame 0 at 0 (clean): Wan 2.2 TI2V's
    image-to-video conditioning (`expand_timesteps` in WanPipeline / WanImageToVideoPipeline)."""
    _, _, f, h, w = latent_shape
    p_t, p_h, p_w = patch_size
    mask = torch.ones(f // p_t, h // p_h, w // p_w, device=timesteps.device)  # (f', h', w') tokens
    mask[0] = 0
    return timesteps.view(-1, 1) * mask.flatten()[None]  # (b, tokens)


def predict(transformer, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, expand_timesteps: bool) -> torch.Tensor:
    """The transformer's velocity for noisy latents (b, c, f, h, w) and text (b, tokens, dim).

    Wan 2.1 takes one timestep per clip; Wan 2.2 TI2V (`expand_timesteps`) one per token, 0 on latent
    frame 0, which tells it that frame is clean."""
    timesteps = timesteps.to(noisy.device).expand(noisy.shape[0])  # (b,)
    if expand_timesteps:
        timesteps = token_timesteps(timesteps, noisy.shape, tuple(transformer.config.patch_size))
    return transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0]  # (b, c, f, h, w)
