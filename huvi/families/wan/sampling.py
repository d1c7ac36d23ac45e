"""First-frame-conditioned sampling for Wan: flow-matching solvers with latent frame 0 held at the
clean first-frame latent at every step (as in training, where it enters the transformer clean), and
SDEdit from a clip for DenseDPO's aligned pairs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from tqdm.auto import tqdm

from huvi.errors import HuviError
from huvi.families.sd15.sampling import guided, sdedit_start
from huvi.families.wan.diffusion import NUM_TRAIN_TIMESTEPS, first_frame_noisy, predict


def make_scheduler(name: str, shift: float):
    """A flow-matching solver of kind `name` on the training schedule's shift: euler = the
    flow-matching Euler method, dpm++ = DPM-Solver++ on flow sigmas (WanPipeline itself uses UniPC)."""
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
        )
    raise HuviError(f"generate.scheduler={name} is not a flow-matching sampler; the wan family samples with euler or dpm++.")


@torch.no_grad()
def sample_latents(
    transformer: torch.nn.Module,
    scheduler,
    first: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor,
    frames: int,
    steps: int,
    guidance: float,
    generator: torch.Generator,
    expand_timesteps: bool,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Latents (1, c, frames, h, w) with latent frame 0 held at `first` (c, h, w).

    text, uncond: (tokens, dim). Noise is drawn on the CPU from `generator`. With `init`
    (1, c, frames, h, w) it is SDEdit (Meng et al. 2022): only the last round(strength * steps)
    steps run, from x = (1 - sigma) init + sigma eps at the first of them, latent frame 0 clean.
    """
    c, h, w = first.shape
    device, dtype = first.device, first.dtype
    scheduler.set_timesteps(steps, device=device)
    noise = torch.randn((1, c, frames, h, w), generator=generator, dtype=torch.float32).to(device, dtype)
    timesteps = scheduler.timesteps
    if init is None:
        latents = noise
    else:
        begin = sdedit_start(steps, strength, scheduler.order)
        timesteps = timesteps[begin:]
        scheduler.set_begin_index(begin)
        latents = first_frame_noisy(init.to(device, dtype), noise, scheduler.sigmas[begin : begin + 1] * NUM_TRAIN_TIMESTEPS)
    clean = first[None, :, None]  # (1, c, 1, h, w)
    latents = torch.cat([clean, latents[:, :, 1:]], dim=2)
    use_cfg = guidance > 1.0
    embeds = torch.stack([uncond, text]) if use_cfg else text[None]  # (2 or 1, tokens, dim)
    for i, t in enumerate(tqdm(timesteps, desc="denoising", unit="step", disable=not show_progress)):
        model_in = latents.repeat(len(embeds), 1, 1, 1, 1)  # (2 or 1, c, f, h, w)
        pred = predict(transformer, model_in, t.expand(len(embeds)), embeds.to(dtype), expand_timesteps)
        pred = guided(pred, guidance) if use_cfg else pred
        latents = scheduler.step(pred, t, latents).prev_sample
        latents = torch.cat([clean, latents[:, :, 1:]], dim=2)  # latent frame 0 held clean
        if progress is not None:
            progress(i + 1, len(timesteps))
    return latents
