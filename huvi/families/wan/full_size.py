"""Full-size Wan 2.1 T2V-1.3B and Wan 2.2 TI2V-5B with random weights: the real path, checked without
a download.

The architectures are shipped in `huvi/configs/`, written from diffusers' scripts/convert_wan_to_diffusers.py
(the script that made the -Diffusers repositories; diffusers commit 58eb52c: its `get_transformer_config`
entries "Wan-T2V-1.3B" and "Wan2.2-TI2V-5B", `vae22_diffusers_config`, and `AutoencoderKLWan()`'s
defaults, which are the Wan 2.1 VAE) and from google/umt5-xxl's config.json (as ComfyUI ships it in
comfy/text_encoders/umt5_config_xxl.json):

    wan21_t2v_1.3b_transformer.json, wan21_vae.json   Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/, vae/
    wan22_ti2v_5b_transformer.json, wan22_vae.json    Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/, vae/
                                                      (less the script's clip_output, which diffusers 0.42 no longer takes)
    umt5_xxl_encoder.json                             text_encoder/ of both: UMT5-XXL's encoder, 5.7B params

`full_size_transformer` and `full_size_encoders` build them (the bench counts memory and FLOPs on the
meta device, so a preset naming one of these Hub ids needs no download for `bench --estimate`).
`write_test_weights` writes one of them as the Hub serves it, so that `from_pretrained` on the folder
runs the loading code real weights go through (`python -m huvi make-test-weights DIR --family wan`):

    DIR/Wan2.1-T2V-1.3B-Diffusers/   model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/
    DIR/Wan2.2-TI2V-5B-Diffusers/    the same; model_index.json says expand_timesteps, the transformer is in shards

Where the folders differ from the Hub's:
- text_encoder/: UMT5-XXL's encoder (11 GB in bf16) does not fit beside a 5B transformer in a 24 GB
  machine. A UMT5EncoderModel of the same class and width (d_model 4096: the transformer's text_dim)
  stands in, with 2 layers of 8 heads, d_ff 512 and the tokenizer's vocabulary (TEXT_STAND_IN).
- tokenizer/: huvi.families.wan.tiny's character-level tokenizer, built offline (UMT5's sentencepiece
  vocabulary is a download); prompts are padded to 512 tokens, as WanPipeline pads them.
- dtypes: the conversion script writes the transformer and VAE in fp32 (its --dtype default) and UMT5
  in bf16, and so does this, except for the 5B transformer, written in bf16 (10 GB; fp32 would take
  20 GB of memory to build).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from huvi.errors import HuviError
from huvi.families.full_size import MARKER, read_architecture, write_folder
from huvi.families.wan import tiny
from huvi.families.wan.diffusion import WAN21_SCHEDULER
from huvi.families.wan.models import PROMPT_TOKENS
from huvi.hub import pretrained
from huvi.io import write_json

logger = logging.getLogger(__name__)

UMT5_XXL = "umt5_xxl_encoder"  # google/umt5-xxl config.json: 24 layers, 64 heads, d_model 4096, d_ff 10240
# The written text encoder: UMT5-XXL's config with fewer and narrower layers (its width stays 4096).
TEXT_STAND_IN = {"num_layers": 2, "num_heads": 8, "d_ff": 512}


@dataclass(frozen=True)
class Architecture:
    """One published Wan model, as its -Diffusers repository holds it."""

    folder: str  # the repository's name: the folder write_test_weights writes
    transformer: str  # huvi/configs/ name of transformer/config.json
    vae: str  # huvi/configs/ name of vae/config.json
    flow_shift: float  # scheduler/scheduler_config.json
    expand_timesteps: bool  # model_index.json: per-token timesteps, latent frame 0 at 0 (TI2V)
    transformer_dtype: torch.dtype  # of the written transformer
    max_shard_size: str  # of the written safetensors files


# The wan presets' models (model.base), by Hub id.
ARCHITECTURES = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": Architecture(
        "Wan2.1-T2V-1.3B-Diffusers", "wan21_t2v_1.3b_transformer", "wan21_vae", 3.0, False, torch.float32, "10GB"
    ),  # 1.42B params: one 5.7 GB file
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": Architecture(
        "Wan2.2-TI2V-5B-Diffusers", "wan22_ti2v_5b_transformer", "wan22_vae", 5.0, True, torch.bfloat16, "5GB"
    ),  # 5.0B params: 10 GB in bf16, two shards, so the sharded loading path runs too
}


def component_config(base: str, component: str) -> dict:
    """config.json of `component` ("transformer" or "vae") of the model `base`: the shipped one for
    the presets' Hub ids (no download), else read from the folder or the Hugging Face cache."""
    if base in ARCHITECTURES:
        return read_architecture(getattr(ARCHITECTURES[base], component))
    loader = {"transformer": WanTransformer3DModel, "vae": AutoencoderKLWan}[component]
    return pretrained(SimpleNamespace(from_pretrained=loader.load_config), base, subfolder=component)


def umt5_config(**overrides) -> UMT5Config:
    """UMT5-XXL's encoder config with `overrides`."""
    config = read_architecture(UMT5_XXL)
    del config["architectures"]
    return UMT5Config(**config | overrides)


def full_size_transformer(base: str, device: torch.device | str) -> WanTransformer3DModel:
    """The transformer of model `base` at full size, random weights, built on `device` ("meta": shapes only)."""
    with torch.device(device):
        return WanTransformer3DModel.from_config(component_config(base, "transformer"))


def full_size_encoders(base: str, device: torch.device | str) -> tuple[AutoencoderKLWan, UMT5EncoderModel]:
    """The VAE of model `base` and UMT5-XXL's encoder at full size, random weights, on `device`."""
    with torch.device(device):
        vae = AutoencoderKLWan.from_config(component_config(base, "vae"))
        text_encoder = UMT5EncoderModel(umt5_config())
    return vae.eval(), text_encoder.eval()


def write_test_weights(base: str, root: Path, seed: int = 0, force: bool = False) -> Path:
    """Write (or find, when already complete) the full-size random folder of the Hub model `base` under `root`."""
    if base not in ARCHITECTURES:
        raise HuviError(f"make-test-weights writes the wan presets' models ({', '.join(ARCHITECTURES)}), not {base}.")
    arch = ARCHITECTURES[base]
    folder = Path(root) / arch.folder
    stamp = {
        "seed": seed,
        "transformer": read_architecture(arch.transformer),
        "transformer_dtype": str(arch.transformer_dtype),
        "vae": read_architecture(arch.vae),
        "text_encoder": TEXT_STAND_IN,
    }
    marker = folder / MARKER
    if not force and marker.is_file() and json.loads(marker.read_text()) == stamp:
        logger.info("full-size test weights already in %s", folder)
        return folder

    def save(tmp: Path) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _pipeline(arch).save_pretrained(tmp, safe_serialization=True, max_shard_size=arch.max_shard_size)
        write_json(tmp / MARKER, stamp)

    Path(root).mkdir(parents=True, exist_ok=True)
    write_folder(folder, save)
    logger.info("wrote full-size test weights to %s", folder)
    return folder


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters built inside are created in `dtype` (no fp32 copy is ever made)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _pipeline(arch: Architecture) -> WanPipeline:
    """The model's parts with random weights: the transformer and VAE at full size, the text encoder stand-in."""
    logger.info("building a full-size %s transformer (%s) and VAE with random weights", arch.folder, arch.transformer_dtype)
    with _default_dtype(arch.transformer_dtype):
        transformer = WanTransformer3DModel.from_config(read_architecture(arch.transformer))
    vae = AutoencoderKLWan.from_config(read_architecture(arch.vae))
    tokenizer = tiny.build_tokenizer(PROMPT_TOKENS)
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    text_encoder = UMT5EncoderModel(umt5_config(**TEXT_STAND_IN, **ids)).to(torch.bfloat16)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=UniPCMultistepScheduler(**WAN21_SCHEDULER | {"flow_shift": arch.flow_shift}),
        transformer=transformer.eval(),
        expand_timesteps=arch.expand_timesteps,
    )
