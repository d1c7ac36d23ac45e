"""Tiny random-weight components, built offline from configs in code.

The `tiny` preset uses these so the whole flow (cache, both stages, evaluation) runs on a CPU in
seconds and in tests without any download. Weights come from a fixed seed inside `fork_rng`, so two
builds are identical and the caller's random state is untouched.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    MotionAdapter,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from huvi.families.sd15.diffusion import SD15_SCHEDULER

WEIGHT_SEED = 1234
TEXT_DIM = 32  # cross-attention width shared by the tiny text encoder and UNet

UNET2D = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=8,
)
MOTION = dict(
    block_out_channels=(32, 64),
    motion_layers_per_block=1,
    motion_num_attention_heads=2,
    motion_norm_num_groups=8,
    motion_max_seq_length=32,
    use_motion_mid_block=False,
)
# Two blocks: one 2x downsampling, so 32x32 frames give 16x16x4 latents.
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    # 1 / std of this random encoder's latent means on natural-ish frames (measured once with
    # WEIGHT_SEED): scales latents to about unit variance, as 0.18215 does for the real SD VAE.
    scaling_factor=7.0,
)
TEXT = dict(
    hidden_size=TEXT_DIM,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    max_position_embeddings=77,
    projection_dim=TEXT_DIM,
)


# Tiny SDXL for the first-frame path: two text encoders whose hidden states are concatenated
# (32 + 32 = 64 = cross_attention_dim) and a "text_time" embedding of the second encoder's pooled
# output (32) plus six size/crop numbers (6 x 8): 32 + 48 = 80 inputs.
SDXL_TIME_DIM = 8
SDXL_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=SDXL_TIME_DIM,
    transformer_layers_per_block=(1, 1),
    projection_class_embeddings_input_dim=TEXT_DIM + 6 * SDXL_TIME_DIM,
    cross_attention_dim=2 * TEXT_DIM,
    norm_num_groups=8,
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table (every byte gets one visible character)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def write_tokenizer(folder: Path) -> None:
    """A character-level CLIP BPE tokenizer: every byte character, alone or word-final, no merges."""
    symbols = list(_bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )


def build_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory(prefix="huvi-tok-") as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


def _text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextConfig(vocab_size=len(tokenizer), **ids, **TEXT)


def build_sdxl_components() -> dict:
    """Keyword arguments of a tiny random `StableDiffusionXLPipeline` (seeded like the rest)."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED + 1)
        return dict(
            unet=UNet2DConditionModel(**SDXL_UNET),
            vae=AutoencoderKL(**VAE),
            text_encoder=CLIPTextModel(_text_config(tokenizer)),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            scheduler=EulerDiscreteScheduler.from_config(SD15_SCHEDULER),
        )


def build_components() -> dict:
    """unet2d, motion_adapter, vae, text_encoder, tokenizer and scheduler of the tiny preset."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        unet2d = UNet2DConditionModel(**UNET2D)
        adapter = MotionAdapter(**MOTION)
        vae = AutoencoderKL(**VAE)
        text_encoder = CLIPTextModel(_text_config(tokenizer))
    return dict(
        unet2d=unet2d,
        motion_adapter=adapter,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=DDPMScheduler(**SD15_SCHEDULER),
    )
