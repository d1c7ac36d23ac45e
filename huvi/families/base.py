"""The interface every model family implements: what the trainer, the losses, DenseDPO, evaluate,
generate, the bench, the CLI and the app need from a video model (after finetrainers'
`ModelSpecification`). They hold a `ModelFamily` built for a run's `model` settings
(`huvi.families.family_for`) and call it; none of them names a model.

A family supplies:

    components   load_denoiser, load_encoders (Hub id or local folder, or tiny random ones built
                 offline), load_schedule (the training noise schedule), weight_sources,
                 write_test_weights (full-size random folders), cache_id (what the latent cache keys on)
    encoding     Encoders.encode_prompt / encode_frames / decode (the latent cache, generate, DenseDPO)
                 and frames_per_latent (latent_frames; DenseDPO's segments are runs of latent frames)
    training     sample_timesteps, eval_timesteps, noisy_input (latent frame 0 held clean), target,
                 predict: the error of a clip is per_sample_error(predict(noisy_input), target)
    sampling     sampler, sample (latent frame 0 held clean at every step; SDEdit from a clip),
                 sdedit_timestep
    LoRA         its `targets` module (no model code, so a config reads it cheaply): the module-name
                 regexes of the motion and DPO adapters, the config's adapter defaults
    export       export_formats (huvi.export writes them), export_metadata, render_card
    bench        random_denoiser, random_encoders, latent_shape, prompt_shape, encode_uncached,
                 step_parts
    presets      smaller_presets (the out-of-memory advice)

What a flow-matching family (Wan 2.1/2.2: a 3D transformer, a causal VAE whose latent frame 0 is
video frame 0 alone, a UMT5 text encoder) will supply through the same methods: `sample_timesteps`
draws sigmas as its scheduler does (with its shift) and returns them as the model's timesteps;
`noisy_input` is x_t = (1 - sigma) x_0 + sigma eps with latent frame 0 kept at x_0; `target` is
v = eps - x_0; `predict` calls the transformer (per-token timesteps for TI2V's first frame); the
sampler is its flow-matching Euler scheduler; `encode_frames` returns (c, 1 + (f - 1) / 4, h, w)
latents (`frames_per_latent` 4). The trainer, the losses and DenseDPO are unchanged by it: they see
latents, noise, timesteps, errors and frames_per_latent only.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from huvi.config import DataConfig, ModelConfig
from huvi.segments import latent_count

if TYPE_CHECKING:
    from huvi.lora import Lora


def fresh_copy(component: torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A copy of a family's cached tiny component (built in fp32) in `dtype`, so callers may train
    or move it freely; no cast at fp32, where diffusers would warn on any dtype cast."""
    component = copy.deepcopy(component)
    return component if dtype == torch.float32 else component.to(dtype)


class Encoders(Protocol):
    """A family's VAE and text encoder (each may visit a device and go back: `vae`, `text_encoder`)."""

    vae: torch.nn.Module
    text_encoder: torch.nn.Module

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """(tokens, dim) embeddings on the CPU; the text encoder is on `device`."""
        ...

    def encode_frames(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        """(f, H, W, 3) uint8 -> (c, f', h, w) fp32 latents on the CPU; the VAE is on `device`."""
        ...

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(1, c, f', h, w) latents -> (f, H, W, 3) uint8 frames, on the VAE's device."""
        ...


@dataclass(frozen=True)
class ExportFormat:
    """One file layout a family's LoRA can be written in (huvi.export)."""

    carries: Callable[[str], bool]  # whether the format can hold a layer (by module path)
    prepare: Callable[[Lora], Lora]  # the same updates in the form the format stores
    tensors: Callable[[Lora], dict[str, torch.Tensor]]  # the file's tensors
    metadata: Callable[[Lora], dict[str, str]]  # metadata the format's loader reads
    bakes_scale: bool  # prepare bakes each layer's alpha/rank scale into its up weights
    implementation: str  # modelspec.implementation: the code whose module naming the keys follow
    left_out: str  # the layers the format cannot hold ("" for none)
    reason: str  # why, and where to get them instead


def diffusers_format(component: str) -> ExportFormat:
    """Every layer as peft keys under the pipeline component `component` ("unet", "transformer"), with
    diffusers' own `lora_adapter_metadata`: what the family's pipeline's `load_lora_weights` reads."""
    from huvi.lora import diffusers_metadata, diffusers_tensors

    return ExportFormat(
        carries=lambda module: True,
        prepare=lambda lora: lora,
        tensors=partial(diffusers_tensors, prefix=component),
        metadata=partial(diffusers_metadata, prefix=component),
        bakes_scale=False,
        implementation="diffusers",
        left_out="",
        reason="",
    )


class ModelFamily(ABC):
    """A video model family, built for one `ModelConfig` (its weights and attention settings)."""

    name: ClassVar[str]  # the `model.family` setting that selects it
    smaller_presets: ClassVar[dict[str, str]]  # preset -> its next smaller VRAM tier (the out-of-memory advice)
    # Video frames per latent frame after latent frame 0, which is video frame 0 alone: the VAE's
    # temporal compression (DenseDPO's segments are runs of whole latent frames, huvi.segments).
    frames_per_latent: ClassVar[int] = 1

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self._schedule: Any | None = None

    @property
    def schedule(self) -> Any:
        """The training noise schedule, loaded on first use (`load_schedule`) unless set."""
        if self._schedule is None:
            self._schedule = self.load_schedule()
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: Any) -> None:
        self._schedule = schedule

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` video frames (`frames_per_latent`)."""
        return latent_count(frames, self.frames_per_latent)

    # components --------------------------------------------------------------------------------
    @abstractmethod
    def load_denoiser(self, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The video denoiser with its weights in `dtype`, on the CPU, in eval mode."""

    @abstractmethod
    def load_encoders(self, dtype: torch.dtype = torch.float32) -> Encoders:
        """The VAE and text encoder with their weights in `dtype`, on the CPU."""

    @abstractmethod
    def load_schedule(self) -> Any:
        """The training noise schedule (what `noisy_input`, `target` and `sampler` build on)."""

    @abstractmethod
    def published_schedule(self) -> Any:
        """The architecture's training noise schedule built in code, with no weights read (the bench)."""

    @abstractmethod
    def weight_sources(self) -> dict[str, str]:
        """Where each pretrained part's weights come from (settings name -> Hub id or folder)."""

    @abstractmethod
    def write_test_weights(self, root: Path, seed: int = 0, force: bool = False) -> dict:
        """Write (or find complete) full-size random-weight model folders under `root`, as the Hub
        serves them (`make-test-weights`): the folders and the `set` overrides that point a preset at them."""

    @abstractmethod
    def cache_id(self) -> dict:
        """What a cached latent or prompt embedding depends on besides its input (JSON-able)."""

    # training ----------------------------------------------------------------------------------
    @abstractmethod
    def sample_timesteps(self, n: int, gen: torch.Generator, low: float = 0.0) -> torch.Tensor:
        """(n,) training timesteps drawn from `gen` (one per clip, or per pair). `low` in [0, 1):
        only the noisiest 1 - low of the family's timestep distribution (its quantiles above `low`)."""

    @abstractmethod
    def eval_timesteps(self, samples: int, low: float = 0.0) -> torch.Tensor:
        """(samples,) timesteps spread evenly over the schedule above quantile `low`, for scoring pairs."""

    @abstractmethod
    def noisy_input(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The model input at `timesteps`, latent frame 0 held clean: (b, c, f, h, w)."""

    @abstractmethod
    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the model is trained to predict: (b, c, f, h, w)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The model's output for noisy latents (b, c, f, h, w) and text (b, tokens, dim)."""

    # sampling ----------------------------------------------------------------------------------
    @abstractmethod
    def sampler(self, name: str) -> Any:
        """An inference scheduler of kind `name` (generate.scheduler) on the training schedule."""

    @abstractmethod
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
        """Latents (1, c, f', h, w) of a clip whose latent frame 0 is held at `first` (c, h, w); with
        `init` (1, c, f', h, w) SDEdit from it at `strength`."""

    @abstractmethod
    def sdedit_timestep(self, sampler: Any, steps: int, strength: float) -> int:
        """The timestep SDEdit at `strength` starts from with `steps` sampler steps."""

    # export ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def export_formats(self) -> dict[str, ExportFormat]:
        """Format name -> layout, in the order the CLI and the app offer them."""

    @abstractmethod
    def export_metadata(self, fmt: str, adapters: str, baked: bool, category: str, prompt: str) -> dict[str, str]:
        """What a file of format `fmt` says about the base model, for the LoRA `adapters`
        ("motion + dpo"): `description` (the file's one-line description) and the `modelspec.*`,
        `huvi.*` and `ss_*` keys that name the model (huvi.export adds the rest)."""

    @abstractmethod
    def render_card(self, fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
        """The model card (README.md) beside an export: `files` (file name -> adapters it holds) of
        format `fmt`, `meta` the metadata written into the first of them."""

    # bench -------------------------------------------------------------------------------------
    @abstractmethod
    def random_denoiser(self, device: torch.device | str) -> torch.nn.Module:
        """The denoiser at the preset's size with random weights, built on `device` ("meta": shapes only)."""

    @abstractmethod
    def random_encoders(self, device: torch.device | str) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(VAE, text encoder) at the preset's size with random weights, on `device`."""

    @abstractmethod
    def latent_shape(self, data: DataConfig, frames: int) -> tuple[int, int, int, int]:
        """(c, f', h, w) of a clip of `frames` frames at data.width x data.height."""

    @property
    @abstractmethod
    def prompt_shape(self) -> tuple[int, int]:
        """(tokens, dim) of a prompt embedding."""

    @abstractmethod
    def encode_uncached(self, vae: torch.nn.Module, text_encoder: torch.nn.Module, pixels: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The naive baseline's encoding inside a step: pixels (k, f, 3, H, W) in [-1, 1] and token ids
        (1, tokens) -> latents (k, c, f', h, w), text (tokens, dim)."""

    @property
    @abstractmethod
    def step_parts(self) -> tuple[tuple[str, str], ...]:
        """(part of a step, regex fullmatched against a module path as torch's ModuleTracker writes it)."""
