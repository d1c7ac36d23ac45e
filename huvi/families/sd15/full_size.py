"""Full-size SD1.5 + AnimateDiff models with random weights: the real path, checked without a download.

The architectures are the models' public config.json files, shipped in `huvi/configs/`:

    sd15_unet.json, sd15_vae.json, sd15_text_encoder.json   stable-diffusion-v1-5 (unet/, vae/, text_encoder/)
    animatediff_motion_adapter_v1_5_2.json                  guoyww/animatediff-motion-adapter-v1-5-2

`full_size_unet` and `full_size_encoders` build them in memory (the bench counts memory and FLOPs
on the meta device). `write_test_weights(DIR)` writes them to disk as the Hub serves them, so that
`from_pretrained` on the folders runs the loading code real weights go through
(`python -m huvi make-test-weights DIR`):

    DIR/stable-diffusion-v1-5/               model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
    DIR/animatediff-motion-adapter-v1-5-2/   config.json, diffusion_pytorch_model.safetensors

Weights are fp32 safetensors, as in the Hub repositories (about 6 GB in all). The tokenizer is
huvi.families.sd15.tiny's character-level CLIP tokenizer, built offline (the real vocabulary is a download); its
ids fit the text encoder's 49408 embeddings. The scheduler is SD1.5's PNDM configuration.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextConfig, CLIPTextModel

from huvi.config import ModelConfig
from huvi.families.full_size import MARKER, read_architecture, write_folder
from huvi.families.sd15 import tiny
from huvi.families.sd15.diffusion import SD15_SCHEDULER
from huvi.families.sd15.models import assemble_unet
from huvi.io import write_json

logger = logging.getLogger(__name__)

SD15_UNET = "sd15_unet"  # stable-diffusion-v1-5 unet/config.json
SD15_VAE = "sd15_vae"  # stable-diffusion-v1-5 vae/config.json
SD15_TEXT_ENCODER = "sd15_text_encoder"  # stable-diffusion-v1-5 text_encoder/config.json (CLIP ViT-L/14)
MOTION_ADAPTER = "animatediff_motion_adapter_v1_5_2"  # guoyww/animatediff-motion-adapter-v1-5-2: its architecture fields (v2 has the mid-block motion module)

# stable-diffusion-v1-5 scheduler/scheduler_config.json: PNDM over the training schedule; huvi
# reads it as the DDPM schedule it trains on (huvi.families.sd15.models.load_scheduler).
SD15_PNDM = {k: v for k, v in SD15_SCHEDULER.items() if k != "clip_sample"} | {"skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False}

BASE_FOLDER = "stable-diffusion-v1-5"
MOTION_FOLDER = "animatediff-motion-adapter-v1-5-2"


def full_size_unet(model: ModelConfig, device: torch.device | str) -> UNetMotionModel:
    """SD1.5 UNet + AnimateDiff v1-5-2 motion modules, random weights, built on `device`
    (`"meta"` for shapes only) and assembled as load_unet assembles the pretrained ones."""
    with torch.device(device):
        unet2d = UNet2DConditionModel.from_config(read_architecture(SD15_UNET))
        adapter = MotionAdapter.from_config(read_architecture(MOTION_ADAPTER))
    return assemble_unet(unet2d, adapter, model)


def full_size_encoders(device: torch.device | str) -> tuple[AutoencoderKL, CLIPTextModel]:
    """SD1.5's VAE and CLIP text encoder, random weights, built on `device`."""
    with torch.device(device):
        vae = AutoencoderKL.from_config(read_architecture(SD15_VAE))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(read_architecture(SD15_TEXT_ENCODER)))
    return vae.eval(), text_encoder.eval()


@dataclass(frozen=True)
class TestWeights:
    base: Path  # SD1.5 in diffusers layout (model.base)
    motion_adapter: Path  # the motion adapter in diffusers layout (model.motion_adapter)

    @property
    def overrides(self) -> list[str]:
        """The `--set` values that point a preset at these folders."""
        return [f"model.base={self.base}", f"model.motion_adapter={self.motion_adapter}"]


def write_test_weights(root: Path, seed: int = 0, force: bool = False) -> TestWeights:
    """Write (or find, when already complete) full-size random SD1.5 and motion-adapter folders under `root`."""
    root = Path(root)
    weights = TestWeights(root / BASE_FOLDER, root / MOTION_FOLDER)
    stamp = {"seed": seed, "unet": read_architecture(SD15_UNET), "motion_adapter": read_architecture(MOTION_ADAPTER)}
    marker = root / MARKER
    if not force and marker.is_file() and json.loads(marker.read_text()) == stamp:
        logger.info("full-size test weights already in %s", root)
        return weights
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        write_folder(weights.base, lambda tmp: _sd15_pipeline().save_pretrained(tmp, safe_serialization=True))
        write_folder(weights.motion_adapter, lambda tmp: MotionAdapter.from_config(read_architecture(MOTION_ADAPTER)).save_pretrained(tmp, safe_serialization=True))
    write_json(marker, stamp)
    logger.info("wrote full-size test weights to %s", root)
    return weights


def _sd15_pipeline() -> StableDiffusionPipeline:
    """SD1.5's parts at full size with random weights (fp32), the tokenizer built offline."""
    logger.info("building a full-size SD1.5 UNet, VAE and text encoder with random weights")
    unet = UNet2DConditionModel.from_config(read_architecture(SD15_UNET))
    vae, text_encoder = full_size_encoders("cpu")
    tokenizer = tiny.build_tokenizer()  # character-level, 77 tokens, as CLIP's
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=PNDMScheduler(**SD15_PNDM),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
