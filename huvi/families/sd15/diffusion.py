"""SD1.5's noising, training target and UNet call, with frame 0 held clean.

Latent videos are laid out `(b, c, f, h, w)`, as `UNetMotionModel` takes them. Frame 0 is the
condition: it enters the UNet clean and is left out of every loss (HuViDPO, after LAMP).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

# Stable Diffusion 1.5's training noise schedule (its scheduler/scheduler_config.json).
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
)


def first_frame_noisy(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler: DDPMScheduler) -> torch.Tensor:
    """Forward-diffuse `latents` to `timesteps`, keeping frame 0 clean.

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4) on frames 1..F-1; frame 0 stays x_0.
    latents, noise: (b, c, f, h, w); timesteps: (b,).
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    return torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)  # (b, c, f, h, w)


def prediction_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler: DDPMScheduler) -> torch.Tensor:
    """What the UNet is trained to predict: eps, or v = sqrt(abar) eps - sqrt(1-abar) x_0 for v-prediction."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r}")


def eval_timesteps(samples: int, num_train_timesteps: int, low: float = 0.0) -> torch.Tensor:
    """`samples` timesteps spread evenly over [low T, T): the centres of equal strata."""
    start = round(low * num_train_timesteps)
    return (start + (torch.arange(samples) + 0.5) * (num_train_timesteps - start) / samples).long()


def predict(unet, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """UNet output for noisy latents (b, c, f, h, w) and text embeddings (b, tokens, dim).

    UNetMotionModel folds frames into the batch but does not repeat the text for each frame.
    """
    frames = noisy.shape[2]
    text = text.repeat_interleave(frames, dim=0)  # (b f, tokens, dim)
    return unet(noisy, timesteps, encoder_hidden_states=text).sample  # (b, c, f, h, w)
