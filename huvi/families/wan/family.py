"""The Wan family (Wan 2.1 T2V-1.3B, Wan 2.2 TI2V-5B) behind huvi.families.base.ModelFamily.

Its parts: the transformer and encoders (huvi.families.wan.models, tiny), flow matching with latent
frame 0 clean (diffusion), first-frame-held flow-matching sampling (sampling), LoRA targets
(targets), export layouts (export) and the exported LoRA's model card (card). Wan keeps its full
spatio-temporal attention (see models.load_transformer).

beta for this family is in the same Diffusion-DPO form as SD1.5's (inside = -0.5 beta ((e_w - e_l) -
(ref_w - ref_l))), but the errors are velocity errors |v_pred - (eps - x_0)|^2, whose differences are
on another scale than SD1.5's epsilon errors (E|eps - x_0|^2 = 2 for unit-variance latents, against
E|eps|^2 = 1), so the wan presets set dpo.beta = 2500 themselves (the reasoning is in wan-tiny.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import UniPCMultistepScheduler

from huvi.config import DataConfig
from huvi.families.base import Encoders, ExportFormat, ModelFamily
from huvi.families.sd15.sampling import sdedit_start
from huvi.families.wan import diffusion, export, full_size, models, tiny
from huvi.families.wan.card import render_card
from huvi.families.wan.sampling import make_scheduler, sample_latents

TEXT_DIM = 4096  # UMT5-XXL's width (Wan 2.1 and 2.2)


class Wan(ModelFamily):
    name = "wan"
    frames_per_latent = 4  # the causal VAE: video frame 0 alone, then 4 frames per latent frame
    smaller_presets: ClassVar[dict[str, str]] = {"wan22-5b": "wan21-1.3b"}

    @cached_property
    def published(self) -> full_size.Architecture | None:
        """The published model that model.base names, when it is a preset's (its modes are known without
        a download); with model.source tiny the tiny components run in its modes, so a GPU preset at the
        tiny size differs from it in sizes only."""
        return full_size.ARCHITECTURES.get(self.model.base)

    @cached_property
    def expand_timesteps(self) -> bool:
        """Per-token timesteps with latent frame 0 at 0 (Wan 2.2 TI2V's image-to-video mode), as the
        model's model_index.json says: the published model's, else the folder's."""
        return self.published.expand_timesteps if self.published else models.expand_timesteps(self.model)

    @property
    def shift(self) -> float:
        """The flow shift of the pipeline's scheduler: 3.0 for Wan 2.1 at 480p, 5.0 for Wan 2.2 TI2V."""
        return float(self.schedule.config.flow_shift)

    # components --------------------------------------------------------------------------------
    def load_denoiser(self, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        return models.load_transformer(self.model, dtype)

    def load_encoders(self, dtype: torch.dtype = torch.float32) -> Encoders:
        return models.load_encoders(self.model, dtype)

    def load_schedule(self) -> UniPCMultistepScheduler:
        if self.model.source == "tiny" and self.published:
            return self.published_schedule()
        return models.load_scheduler(self.model)

    def published_schedule(self) -> UniPCMultistepScheduler:
        shift = self.published.flow_shift if self.published else diffusion.WAN21_SCHEDULER["flow_shift"]
        return UniPCMultistepScheduler(**diffusion.WAN21_SCHEDULER | {"flow_shift": shift})

    def weight_sources(self) -> dict[str, str]:
        return {"base": self.model.base}

    def write_test_weights(self, root: Path, seed: int = 0, force: bool = False) -> dict:
        folder = full_size.write_test_weights(self.model.base, root, seed=seed, force=force)
        return {"base": str(folder), "set": [f"model.base={folder}"]}

    def cache_id(self) -> dict:
        return {"family": self.name, "source": self.model.source, "base": self.model.base}

    # training ----------------------------------------------------------------------------------
    def sample_timesteps(self, n: int, gen: torch.Generator, low: float = 0.0) -> torch.Tensor:
        return diffusion.sample_timesteps(n, self.shift, gen, low)

    def eval_timesteps(self, samples: int, low: float = 0.0) -> torch.Tensor:
        return diffusion.eval_timesteps(samples, self.shift, low)

    def noisy_input(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return diffusion.first_frame_noisy(latents, noise, timesteps)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return diffusion.velocity_target(latents, noise)

    def predict(self, model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return diffusion.predict(model, noisy, timesteps, text, self.expand_timesteps)

    # sampling ----------------------------------------------------------------------------------
    def sampler(self, name: str) -> Any:
        return make_scheduler(name, self.shift)

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
        return sample_latents(
            model, sampler, first, text, uncond, frames, steps, guidance, generator, self.expand_timesteps, progress, show_progress, init, strength
        )

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
            return models.load_transformer(self.model).to(device)
        return full_size.full_size_transformer(self.model.base, device)

    def random_encoders(self, device: torch.device | str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self.model.source == "tiny":
            encoders = models.load_encoders(self.model)
            return encoders.vae.to(device), encoders.text_encoder.to(device)
        return full_size.full_size_encoders(self.model.base, device)

    def _vae_config(self) -> dict:
        if self.model.source == "tiny":
            return {**tiny.VAE, "scale_factor_spatial": 8}
        return full_size.component_config(self.model.base, "vae")

    def latent_shape(self, data: DataConfig, frames: int) -> tuple[int, int, int, int]:
        vae = self._vae_config()
        factor = vae.get("scale_factor_spatial", 8)
        return vae.get("z_dim", 16), self.latent_frames(frames), data.height // factor, data.width // factor

    @property
    def prompt_shape(self) -> tuple[int, int]:
        return (tiny.TOKENS, tiny.TEXT_DIM) if self.model.source == "tiny" else (models.PROMPT_TOKENS, TEXT_DIM)

    @torch.no_grad()
    def encode_uncached(self, vae: torch.nn.Module, text_encoder: torch.nn.Module, pixels: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.latent_frames(pixels.shape[1]) * 4 - 3
        video = pixels[:, :keep].transpose(1, 2)  # (k, 3, f, H, W)
        latents = vae.encode(video).latent_dist.sample()  # (k, c, f', h, w)
        mean, std = models.latent_stats(vae, latents)
        text = text_encoder(token_ids).last_hidden_state[0]  # (tokens, dim)
        return (latents - mean) / std, text

    @property
    def step_parts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("transformer self-attention", r"WanTransformer3DModel\.blocks\.\d+\.attn1"),
            ("transformer cross-attention", r"WanTransformer3DModel\.blocks\.\d+\.attn2"),
            ("transformer feed-forward", r"WanTransformer3DModel\.blocks\.\d+\.ffn"),
            ("vae encoder", r"WanEncoder3d"),
            ("text encoder", r"UMT5EncoderModel"),
        )
