"""Wan's transformer and encoders: pretrained from a Hub id or local folder in diffusers layout
(`from_pretrained` straight into the asked dtype), or tiny random ones built in code
(`model.source: tiny`, huvi.families.wan.tiny).

`Encoders` encodes prompts (UMT5, padded with zeros past the prompt as WanPipeline does) and clips
(the causal VAE: video frame 0 alone -> latent frame 0, then 4 frames per latent frame), and decodes.
Latents are normalised per channel with the VAE config's latents_mean/latents_std, as WanPipeline
and WanImageToVideoPipeline do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5EncoderModel

from huvi.config import ModelConfig
from huvi.errors import HuviError
from huvi.families.base import fresh_copy
from huvi.families.wan import tiny
from huvi.hub import pretrained

PROMPT_TOKENS = 512  # WanPipeline's max_sequence_length for Wan 2.1 and 2.2


def latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE config's per-channel latent mean and std, shaped (1, c, 1, 1, 1) like `like`."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return mean.to(like.device, like.dtype), std.to(like.device, like.dtype)


@torch.no_grad()
def encode_frames(vae: AutoencoderKLWan, frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(f, H, W, 3) uint8 -> (c, 1 + (f - 1) // 4, h, w) fp32 normalised latents on the CPU.

    The causal VAE takes 1 + 4k frames; the last (f - 1) % 4 frames are left out."""
    temporal = vae.config.scale_factor_temporal
    keep = 1 + (len(frames) - 1) // temporal * temporal
    frames = np.require(frames[:keep], requirements="W")  # torch.from_numpy wants a writable array
    pixels = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0  # (1, 3, f, H, W) in [-1, 1]
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mean.float()  # (1, c, f', h, w)
    mean, std = latent_stats(vae, latents)
    return ((latents - mean) / std)[0].cpu()  # (c, f', h, w)


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> np.ndarray:
    """(1, c, f', h, w) normalised latents -> (1 + 4 (f' - 1), H, W, 3) uint8 frames."""
    latents = latents.to(vae.device, torch.float32)
    mean, std = latent_stats(vae, latents)
    pixels = vae.decode((latents * std + mean).to(vae.dtype)).sample  # (1, 3, f, H, W) in [-1, 1]
    pixels = ((pixels.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels[0].permute(1, 2, 3, 0).cpu().numpy()  # (f, H, W, 3)


@dataclass
class Encoders:
    """Wan's VAE, UMT5 text encoder and tokenizer (huvi.families.base.Encoders)."""

    vae: AutoencoderKLWan
    text_encoder: UMT5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    tokens: int  # prompt length the embeddings are padded to

    @torch.no_grad()
    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """UMT5's last hidden state, zero past the prompt's tokens, as WanPipeline: (tokens, dim)."""
        batch = self.tokenizer(prompt, padding="max_length", max_length=self.tokens, truncation=True, return_attention_mask=True, return_tensors="pt")
        hidden = self.text_encoder(batch.input_ids.to(device), batch.attention_mask.to(device)).last_hidden_state[0]  # (tokens, dim)
        return (hidden * batch.attention_mask[0, :, None].to(hidden)).float().cpu()

    def encode_frames(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        return encode_frames(self.vae, frames, device)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return decode_latents(self.vae, latents)


@cache
def _tiny() -> dict:
    return tiny.build_components()


def _tiny_copy(name: str, dtype: torch.dtype = torch.float32):
    return fresh_copy(_tiny()[name], dtype)


def load_transformer(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> WanTransformer3DModel:
    """The video transformer with its weights in `dtype`, on the CPU, in eval mode.

    Wan keeps its full spatio-temporal self-attention: every latent token attends to every other in
    the clip, which is how the model was trained. SD1.5's sparse-causal attention widens a per-frame
    attention to frames 0 and i-1; on Wan it would take away context the model relies on."""
    if cfg.attention != "full":
        raise HuviError(f"model.attention={cfg.attention} is for the sd15 family; Wan keeps its full attention, so set model.attention=full.")
    if cfg.source == "tiny":
        return _tiny_copy("transformer", dtype)
    return pretrained(WanTransformer3DModel, cfg.base, subfolder="transformer", torch_dtype=dtype).eval()


def load_encoders(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> Encoders:
    """The VAE and UMT5 encoder with their weights in `dtype` (on the CPU), and the tokenizer."""
    if cfg.source == "tiny":
        return Encoders(_tiny_copy("vae", dtype), _tiny_copy("text_encoder", dtype), _tiny()["tokenizer"], tiny.TOKENS)
    return Encoders(
        vae=pretrained(AutoencoderKLWan, cfg.base, subfolder="vae", torch_dtype=dtype).eval(),
        text_encoder=pretrained(UMT5EncoderModel, cfg.base, subfolder="text_encoder", dtype=dtype).eval(),  # transformers names it dtype
        tokenizer=pretrained(AutoTokenizer, cfg.base, subfolder="tokenizer"),
        tokens=PROMPT_TOKENS,
    )


def load_scheduler(cfg: ModelConfig) -> UniPCMultistepScheduler:
    """The pipeline's scheduler (its flow_shift is the training shift too)."""
    if cfg.source == "tiny":
        return UniPCMultistepScheduler.from_config(_tiny()["scheduler"].config)
    return pretrained(UniPCMultistepScheduler, cfg.base, subfolder="scheduler")


def expand_timesteps(cfg: ModelConfig) -> bool:
    """Whether the pipeline gives each token its own timestep (Wan 2.2 TI2V's model_index.json)."""
    if cfg.source == "tiny":
        return False
    model_index = pretrained(SimpleNamespace(from_pretrained=WanPipeline.load_config), cfg.base)  # model_index.json
    return bool(model_index.get("expand_timesteps", False))
