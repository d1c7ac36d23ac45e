"""The video model: an SD1.5 UNet plus an AnimateDiff motion adapter, and its encoders.

`load_unet` builds the diffusers `UNetMotionModel` (sparse-causal attention installed per config,
motion modules checkpointed with the rest);
`load_encoders` the VAE, CLIP text encoder and tokenizer (`Encoders`, which encode prompts and
frames for the latent cache and decode samples); `load_scheduler` the DDPM noise schedule.
Pretrained parts come from the Hub ids or folders in the config through the usual
`from_pretrained` calls, straight into the asked dtype; `model.source: tiny` builds small random
ones in code (huvi.families.sd15.tiny).

The video UNet holds the loaded tensors themselves: diffusers' `UNetMotionModel.from_unet2d` lays it
out on the meta device (no weights) and `load_state_dict(assign=True)` hands it the SD1.5 UNet's
and the motion adapter's tensors. Building it with weights would first fill a second, random fp32
UNet of 1.3 B parameters (5 GB, 30 s on a CPU) only to overwrite it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from huvi.config import ModelConfig
from huvi.errors import HuviError
from huvi.families.base import fresh_copy
from huvi.families.sd15 import tiny
from huvi.families.sd15.attention import set_spatial_attention
from huvi.families.sd15.checkpointing import checkpoint_motion_modules
from huvi.families.sd15.sampling import decode_latents
from huvi.hub import pretrained

ENCODE_BATCH = 8  # frames per VAE call


@torch.no_grad()
def encode_frames(vae, frames, device: torch.device) -> torch.Tensor:
    """(f, h, w, 3) uint8 -> (c, f, h/s, w/s) fp32 latents: the posterior mean times the VAE's scaling_factor.

    The pixels enter the VAE in its own dtype (a half-precision VAE refuses fp32 input)."""
    frames = np.require(frames, requirements="W")  # torch.from_numpy wants a writable array
    pixels = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (f, 3, h, w) in [-1, 1]
    chunks = [vae.encode(chunk.to(vae.dtype)).latent_dist.mean for chunk in pixels.split(ENCODE_BATCH)]
    latents = torch.cat(chunks).float() * vae.config.scaling_factor  # (f, c, h', w')
    return latents.permute(1, 0, 2, 3).contiguous().cpu()  # (c, f, h', w')


@torch.no_grad()
def encode_prompt(encoders: Encoders, prompt: str, device: torch.device) -> torch.Tensor:
    """The text encoder's last hidden state for `prompt`, padded to the tokenizer's length: (tokens, dim)."""
    tok = encoders.tokenizer
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return encoders.text_encoder(ids.to(device))[0][0].cpu()



@dataclass
class Encoders:
    """SD1.5's VAE, CLIP text encoder and tokenizer (huvi.families.base.Encoders)."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        return encode_prompt(self, prompt, device)

    def encode_frames(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        return encode_frames(self.vae, frames, device)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return decode_latents(self.vae, latents)


@cache
def _tiny() -> dict:
    return tiny.build_components()


def _tiny_copy(name: str, dtype: torch.dtype = torch.float32):
    return fresh_copy(_tiny()[name], dtype)


def assemble_unet(unet2d: UNet2DConditionModel, adapter: MotionAdapter, cfg: ModelConfig) -> UNetMotionModel:
    """The video UNet of `unet2d` and `adapter`, holding their very tensors (in their dtype and on
    their device; meta in, meta out), with huvi's spatial attention and with every motion module
    following the UNet's gradient checkpointing switch."""
    with torch.device("meta"):
        unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)  # the layout only
    # The UNet's modules keep their names in the video UNet and the adapter's motion modules sit
    # at the same paths in both, so the two state dicts together are exactly the video UNet's.
    try:
        unet.load_state_dict(unet2d.state_dict() | adapter.state_dict(), strict=True, assign=True)
    except RuntimeError as err:
        raise HuviError(
            f"The motion adapter does not fit the UNet as a plain AnimateDiff motion adapter ({str(err).splitlines()[0]}); "
            "use an AnimateDiff v1.5 motion adapter in diffusers layout."
        ) from None
    checkpoint_motion_modules(unet)
    set_spatial_attention(unet, cfg.attention, cfg.attention_backend)
    return unet.eval()


def load_unet(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> UNetMotionModel:
    """The video UNet with its weights in `dtype`, on the CPU."""
    if cfg.source == "tiny":
        # The random motion modules keep their random proj_out (not zeroed to an identity): they
        # stand in for pretrained ones, and a zero proj_out would block every gradient to the
        # temporal attention LoRA (proj_in/proj_out are called with input=..., so peft cannot wrap them).
        return assemble_unet(_tiny_copy("unet2d", dtype), _tiny_copy("motion_adapter", dtype), cfg)
    unet2d = pretrained(UNet2DConditionModel, cfg.base, subfolder="unet", torch_dtype=dtype)
    adapter = pretrained(MotionAdapter, cfg.motion_adapter, torch_dtype=dtype)
    return assemble_unet(unet2d, adapter, cfg)


def load_encoders(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> Encoders:
    """The VAE and text encoder with their weights in `dtype` (on the CPU), and the tokenizer."""
    if cfg.source == "tiny":
        return Encoders(_tiny_copy("vae", dtype), _tiny_copy("text_encoder", dtype), _tiny()["tokenizer"])
    return Encoders(
        vae=pretrained(AutoencoderKL, cfg.base, subfolder="vae", torch_dtype=dtype).eval(),
        text_encoder=pretrained(CLIPTextModel, cfg.base, subfolder="text_encoder", dtype=dtype).eval(),  # transformers names it dtype
        tokenizer=pretrained(CLIPTokenizer, cfg.base, subfolder="tokenizer"),
    )


def load_scheduler(cfg: ModelConfig) -> DDPMScheduler:
    if cfg.source == "tiny":
        return DDPMScheduler.from_config(_tiny()["scheduler"].config)
    # Never clip the predicted x_0: SD1.5's own config says clip_sample false, but a config saved from
    # a PNDMScheduler (mirrors, conversions, the demo model's folder) drops the key, and DDPM and DDIM
    # then default to clipping x_0 to [-1, 1], which is for pixel models: latents (std ~1, peaks ~4)
    # come out washed of every saturated colour (measured on the demo model's samples).
    return pretrained(DDPMScheduler, cfg.base, subfolder="scheduler", clip_sample=False)
