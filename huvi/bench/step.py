"""One training step as the trainer composes it, or as the published video-DPO code does (naive).

huvi's step is composed of the functions the trainer calls: cached latents cropped by
`crop_and_flip`, `denoising_errors` (motion) or `pair_errors` + `diffusion_dpo_loss` (DPO, the
reference being the same UNet with only the motion adapter active), LoRA from `add_adapter` /
`set_active`, the optimizer from `make_optimizer`, accelerate's autocast, gradient checkpointing as
the preset sets it. The naive step is published video-DPO code's: a `copy.deepcopy` of the UNet as
the DPO reference, no gradient checkpointing, fp32 `torch.optim.AdamW`, and no caching (the VAE
encodes the clips' pixel frames and the text encoder the prompt inside every step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from huvi.adapters import DPO, MOTION, add_adapter, set_active
from huvi.batches import crop_and_flip, derived_seed
from huvi.cache import ClipLatents
from huvi.config import HuviConfig
from huvi.dpo import denoising_errors, pair_errors
from huvi.errors import HuviError
from huvi.families import family_for
from huvi.families.base import ModelFamily
from huvi.losses import diffusion_dpo_loss

STAGES = ("motion", "dpo")
GIB = 2**30


def gib(n: float | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def describe(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool) -> dict:
    """The fields every result line starts with: what was run."""
    d = cfg.data
    return {
        "preset": cfg.preset,
        "stage": stage,
        "naive": naive,
        "frames": d.frames,
        "resolution": f"{d.width}x{d.height}",
        "batch": cfg.stage(stage).batch_size,  # clips (motion) or pairs (dpo) per step
        "gradient_checkpointing": checkpointing,
        "attention": cfg.model.attention,
    }


# one step -------------------------------------------------------------------------------------


class CachedInputs:
    """huvi's inputs: latents and the prompt embedding cached before training, on the CPU."""

    def __init__(self, cfg: HuviConfig, family: ModelFamily, clips: int) -> None:
        self.cfg = cfg
        shape = family.latent_shape(cfg.data, cfg.data.max_cached_frames)
        self.clips = [ClipLatents(torch.randn(shape), torch.randn(shape)) for _ in range(clips)]  # (c, F, h, w)
        self.prompt_embeds = torch.randn(family.prompt_shape)  # (tokens, dim)

    def __call__(self, batch: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cfg.data
        groups = [crop_and_flip(self.clips, d.frames, d.temporal_crop, d.hflip, gen) for _ in range(batch)]  # each (k, c, f, h, w)
        latents = torch.cat([torch.stack([g[i] for g in groups]) for i in range(len(self.clips))])  # (k b, c, f, h, w): [winners; losers]
        return latents.to(device, dtype), self.prompt_embeds.to(device, dtype)

    def modules(self) -> list[torch.nn.Module]:
        return []


class UncachedInputs:
    """The naive inputs: pixel frames and prompt tokens, encoded by the VAE and text encoder every step."""

    def __init__(self, cfg: HuviConfig, family: ModelFamily, clips: int, vae: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
        self.family, self.vae, self.text_encoder = family, vae, text_encoder
        self.pixels = torch.rand(clips, cfg.data.frames, 3, cfg.data.height, cfg.data.width) * 2 - 1  # (k, f, 3, H, W) in [-1, 1]
        self.token_ids = torch.randint(0, text_encoder.config.vocab_size, (1, family.prompt_shape[0]))

    @torch.no_grad()
    def __call__(self, batch: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixels.repeat_interleave(batch, dim=0).to(device, dtype)  # (k b, f, 3, H, W)
        return self.family.encode_uncached(self.vae, self.text_encoder, pixels, self.token_ids.to(device))  # (k b, c, f, h, w), (tokens, dim)

    def modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.text_encoder]


@dataclass
class Setup:
    """What one configuration holds: the trained UNet, its DPO reference, the step's inputs."""

    cfg: HuviConfig
    stage: str
    naive: bool
    device: torch.device
    dtype: torch.dtype
    unet: torch.nn.Module  # the family's denoiser, adapters attached
    reference: torch.nn.Module | None  # DPO: `unet` itself (huvi) or a deep copy (naive); motion: None
    inputs: CachedInputs | UncachedInputs
    family: ModelFamily  # with the architecture's published noise schedule (no weights read)
    model: torch.nn.Module  # what the trained forward calls: `unet`, or accelerate's prepared wrapper of it
    autocast: Callable[[], AbstractContextManager] = nullcontext

    def modules(self) -> list[torch.nn.Module]:
        """Every model held, once (huvi's reference is the trained UNet itself)."""
        held = (self.unet, self.reference, *self.inputs.modules())
        return [m for i, m in enumerate(held) if m is not None and all(m is not other for other in held[:i])]


def build_setup(
    cfg: HuviConfig, stage: str, naive: bool, device: torch.device, dtype: torch.dtype, unet: torch.nn.Module | None = None
) -> Setup:
    """The model of `stage` prepared the way the trainer prepares it, or the naive way, on `unet`
    (default: the preset's model with random weights).

    The motion adapter is a fresh LoRA standing in for the trained one the DPO stage loads.
    """
    if stage not in STAGES:
        raise HuviError(f"--stage must be motion, dpo or both, not {stage!r}.")
    family = family_for(cfg.model)
    family.schedule = family.published_schedule()  # the bench reads no weights
    unet = unet if unet is not None else family.random_denoiser(device)
    if cfg.model.gradient_checkpointing and not naive:
        unet.enable_gradient_checkpointing()
    unet.requires_grad_(False)
    unet.to(device=device, dtype=dtype)  # frozen base in the weight dtype; adapters are added in fp32
    torch.manual_seed(derived_seed(cfg.seed, stage, "init"))
    add_adapter(unet, MOTION, cfg.motion.adapter)
    reference = None
    if stage == DPO:
        reference = copy.deepcopy(unet).requires_grad_(False) if naive else unet
        add_adapter(unet, DPO, cfg.dpo.adapter)
        set_active(unet, [MOTION, DPO], trainable=DPO)
    else:
        set_active(unet, [MOTION], trainable=MOTION)
    unet.to(device)
    clips = 2 if stage == DPO else 1
    if naive:
        vae, text_encoder = family.random_encoders(device)
        inputs = UncachedInputs(cfg, family, clips, vae.to(dtype=dtype).requires_grad_(False), text_encoder.to(dtype=dtype).requires_grad_(False))
    else:
        inputs = CachedInputs(cfg, family, clips)
    return Setup(cfg, stage, naive, device, dtype, unet, reference, inputs, family, model=unet)


def step_loss(setup: Setup, gen: torch.Generator) -> torch.Tensor:
    """The loss of one micro-batch, as the trainer's _motion_loss / _dpo_loss compute it."""
    cfg, family = setup.cfg, setup.family
    batch = cfg.stage(setup.stage).batch_size
    latents, text = setup.inputs(batch, gen, setup.device, setup.dtype)  # (k b, c, f, h, w), (tokens, dim)
    shape = (batch, *latents.shape[1:])  # one noise and timestep per clip, or per pair
    noise = torch.randn(shape, generator=gen).to(setup.device, setup.dtype)
    timesteps = family.sample_timesteps(batch, gen).to(setup.device)
    if setup.stage == MOTION:
        with setup.autocast():
            return denoising_errors(setup.model, family, latents, noise, timesteps, text.unsqueeze(0).expand(batch, -1, -1)).mean()
    latents_w, latents_l = latents.chunk(2)  # each (b, c, f, h, w)
    errors = pair_errors(setup.model, setup.reference, family, latents_w, latents_l, text, noise, timesteps, setup.autocast)
    return diffusion_dpo_loss(*errors, cfg.dpo.beta).loss




def train_step(setup: Setup, accelerator, optimizer, schedule, params: list[torch.nn.Parameter], step: int) -> None:
    """One optimizer step, as the trainer's _step runs it (one process)."""
    cfg, scfg = setup.cfg, setup.cfg.stage(setup.stage)
    for micro in range(scfg.grad_accum):
        torch.manual_seed(derived_seed(cfg.seed, setup.stage, step, micro, 0))
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, setup.stage, step, micro, 0, "data"))
        accelerator.backward(step_loss(setup, gen) / scfg.grad_accum)
    accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)

