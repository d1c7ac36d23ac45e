"""First-frame-conditioned video sampling (HuViDPO inference, after LAMP).

Frame 0 is the clean latent of the first-frame image at every denoising step, exactly as in
training, where it enters the UNet un-noised; only frames 1.. are denoised. Classifier-free
guidance runs the unconditional and conditional branches as one doubled batch. Sampling may also
start part-way from a given clip (SDEdit), which is how DenseDPO's aligned pairs are made.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from tqdm.auto import tqdm

from huvi.families.sd15.diffusion import first_frame_noisy, predict

SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler}


def make_scheduler(name: str, train_scheduler):
    """An inference scheduler of kind `name` on the training noise schedule (same betas, same
    prediction type), so sampling inverts the process the adapters were trained on."""
    return SCHEDULERS[name].from_config(train_scheduler.config)


def guided(noise_pred: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans, eq. 6): eps_u + w (eps_c - eps_u).
    noise_pred: (2b, c, f, h, w) ordered [unconditional; conditional] -> (b, c, f, h, w)."""
    uncond, cond = noise_pred.chunk(2)
    return uncond + guidance * (cond - uncond)


def sdedit_start(steps: int, strength: float, order: int = 1) -> int:
    """Index into a scheduler's `steps` timesteps where SDEdit at `strength` starts: the last
    round(strength * steps) steps (at least one) run, as in diffusers' img2img."""
    return (steps - max(1, round(strength * steps))) * order


@torch.no_grad()
def sample_latents(
    unet: torch.nn.Module,
    scheduler,
    first: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor,
    frames: int,
    steps: int,
    guidance: float,
    generator: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Denoise a clip whose frame 0 is held at `first`.

    first: (c, h, w) clean latent of the first frame; text, uncond: (tokens, dim) prompt and
    negative-prompt embeddings. Returns latents (1, c, frames, h, w) with frame 0 equal to `first`.
    The noise is drawn on the CPU from `generator`, so a seed gives the same clip anywhere.

    Without `init` sampling starts from pure noise. With `init` (1, c, frames, h, w clean latents)
    it is SDEdit (Meng et al. 2022), as in diffusers' img2img: only the last
    round(strength * steps) of the `steps` sampler steps run, starting from init's frames 1..
    forward-diffused to the first of them (t ~ strength * T; x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    for DDIM, the scheduler's own `add_noise` for the others), frame 0 kept clean.
    """
    c, h, w = first.shape
    device, dtype = first.device, first.dtype
    scheduler.set_timesteps(steps, device=device)
    shape = (1, c, frames, h, w)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
    timesteps = scheduler.timesteps
    if init is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        begin = sdedit_start(steps, strength, scheduler.order)
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        latents = first_frame_noisy(init.to(device, dtype), noise, timesteps[:1], scheduler)
    clean = first[None, :, None]  # (1, c, 1, h, w)
    use_cfg = guidance > 1.0
    embeds = torch.stack([uncond, text]) if use_cfg else text[None]  # (2 or 1, tokens, dim)
    for i, t in enumerate(tqdm(timesteps, desc="denoising", unit="step", disable=not show_progress)):
        model_in = scheduler.scale_model_input(latents, t)
        model_in = torch.cat([clean, model_in[:, :, 1:]], dim=2)  # frame 0 enters clean, as in training
        model_in = model_in.repeat(len(embeds), 1, 1, 1, 1)  # (2 or 1, c, f, h, w)
        pred = predict(unet, model_in, t.expand(len(embeds)), embeds.to(dtype))
        pred = guided(pred, guidance) if use_cfg else pred
        latents = scheduler.step(pred, t, latents).prev_sample
        latents = torch.cat([clean, latents[:, :, 1:]], dim=2)
        if progress is not None:
            progress(i + 1, len(timesteps))
    return latents


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch: int = 8) -> np.ndarray:
    """(1, c, f, h, w) scaled latents -> (f, H, W, 3) uint8 frames, decoded `batch` frames at a time."""
    per_frame = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor  # (f, c, h, w)
    per_frame = per_frame.to(vae.device, vae.dtype)
    pixels = torch.cat([vae.decode(chunk).sample for chunk in per_frame.split(batch)])  # (f, 3, H, W) in [-1, 1]
    pixels = ((pixels.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()  # (f, H, W, 3)
