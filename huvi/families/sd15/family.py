"""The SD1.5 + AnimateDiff family behind huvi.families.base.ModelFamily.

Its parts: the models and encoders (huvi.families.sd15.models, tiny, full_size), DDPM epsilon
training with frame 0 clean (diffusion), first-frame-conditioned sampling (sampling), LoRA targets
(targets), export layouts (export) and the exported LoRA's model card (card).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DDPMScheduler

from huvi.config import DataConfig
from huvi.families.base import Encoders, ExportFormat, ModelFamily
from huvi.families.sd15 import export, full_size, models, tiny
from huvi.families.sd15.card import render_card
from huvi.families.sd15.diffusion import SD15_SCHEDULER, eval_timesteps, first_frame_noisy, predict, prediction_target
from huvi.families.sd15.sampling import make_scheduler, sample_latents, sdedit_start

TOKENS = 77  # CLIP's prompt length


class SD15(ModelFamily):
    name = "sd15"
    smaller_presets: ClassVar[dict[str, str]] = {"sd15-24gb": "sd15-16gb", "sd15-16gb": "sd15-12gb"}

    # components --------------------------------------------------------------------------------
    def load_denoiser(self, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        return models.load_unet(self.model, dtype)

    def load_encoders(self, dtype: torch.dtype = torch.float32) -> Encoders:
        return models.load_encoders(self.model, dtype)

    def load_schedule(self) -> DDPMScheduler:
        return models.load_scheduler(self.model)

    def published_schedule(self) -> DDPMScheduler:
        return DDPMScheduler(**SD15_SCHEDULER)

    def weight_sources(self) -> dict[str, str]:
        return {"base": self.model.base, "motion_adapter": self.model.motion_adapter}

    def write_test_weights(self, root: Path, seed: int = 0, force: bool = False) -> dict:
        weights = full_size.write_test_weights(root, seed=seed, force=force)
        return {"base": str(weights.base), "motion_adapter": str(weights.motion_adapter), "set": weights.overrides}

    def cache_id(self) -> dict:
        return {"source": self.model.source, "base": self.model.base}

    # training ----------------------------------------------------------------------------------
    def sample_timesteps(self, n: int, gen: torch.Generator, low: float = 0.0) -> torch.Tensor:
        steps = self.schedule.config.num_train_timesteps
        return torch.randint(round(low * steps), steps, (n,), generator=gen)

    def eval_timesteps(self, samples: int, low: float = 0.0) -> torch.Tensor:
        return eval_timesteps(samples, self.schedule.config.num_train_timesteps, low)

    def noisy_input(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return first_frame_noisy(latents, noise, timesteps, self.schedule)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return prediction_target(latents, noise, timesteps, self.schedule)

    def predict(self, model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return predict(model, noisy, timesteps, text)

    # sampling ----------------------------------------------------------------------------------
    def sampler(self, name: str) -> Any:
        return make_scheduler(name, self.schedule)

    def sample(
        self,
        model: torch.nn.Module,
        sampler: Any,
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
        return sample_latents(model, sampler, first, text, uncond, frames, steps, guidance, generator, progress, show_progress, init, strength)

    def sdedit_timestep(self, sampler: Any, steps: int, strength: float) -> int:
        sampler.set_timesteps(steps)
        return int(sampler.timesteps[sdedit_start(steps, strength, sampler.order)])

    # export ------------------------------------------------------------------------------------
    @property
    def export_formats(self) -> dict[str, ExportFormat]:
        return export.EXPORT_FORMATS

    def export_metadata(self, fmt: str, adapters: str, baked: bool, category: str, prompt: str) -> dict[str, str]:
        return export.export_metadata(self.model, fmt, adapters, baked, category, prompt)

    def render_card(self, fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
        spec = export.EXPORT_FORMATS[fmt]
        return render_card(fmt, files, meta, spec.left_out, spec.reason)

    # bench -------------------------------------------------------------------------------------
    def random_denoiser(self, device: torch.device | str) -> torch.nn.Module:
        if self.model.source == "tiny":
            return models.load_unet(self.model).to(device)
        return full_size.full_size_unet(self.model, device)

    def random_encoders(self, device: torch.device | str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self.model.source == "tiny":
            encoders = models.load_encoders(self.model)
            return encoders.vae.to(device), encoders.text_encoder.to(device)
        return full_size.full_size_encoders(device)

    def latent_shape(self, data: DataConfig, frames: int) -> tuple[int, int, int, int]:
        vae = tiny.VAE if self.model.source == "tiny" else full_size.read_architecture(full_size.SD15_VAE)
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        return vae["latent_channels"], frames, data.height // factor, data.width // factor

    @property
    def prompt_shape(self) -> tuple[int, int]:
        dim = tiny.TEXT_DIM if self.model.source == "tiny" else full_size.read_architecture(full_size.SD15_UNET)["cross_attention_dim"]
        return TOKENS, dim

    @torch.no_grad()
    def encode_uncached(self, vae: torch.nn.Module, text_encoder: torch.nn.Module, pixels: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = vae.encode(pixels.flatten(0, 1)).latent_dist.sample() * vae.config.scaling_factor  # (k f, c, h, w)
        latents = latents.unflatten(0, pixels.shape[:2]).transpose(1, 2)  # (k, c, f, h, w)
        text = text_encoder(token_ids)[0][0]  # (tokens, dim)
        return latents, text

    @property
    def step_parts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("unet motion modules", r"UNetMotionModel\..*\.motion_modules\.\d+"),
            ("unet spatial transformers", r"UNetMotionModel\..*\.attentions\.\d+"),
            ("unet resnets", r"UNetMotionModel\..*\.resnets\.\d+"),
            ("vae encoder", r"Encoder"),  # vae.encode() calls vae.encoder directly
            ("text encoder", r"CLIPTextModel"),
        )
