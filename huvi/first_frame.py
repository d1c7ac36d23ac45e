"""The first frame of a generated video: the user's image, or one made by DPO-SDXL (HuViDPO), or,
for the demo model (generate.first_frame.source: shapes), a shape drawn in code (huvi.demo_data).

DPO-SDXL is the SDXL base pipeline with its UNet replaced by the Diffusion-DPO-tuned one. It draws
at an SDXL-native size whose aspect ratio is nearest the video's, and the picture is then resized
and centre-cropped to the video size. The pipeline is dropped (and the CUDA cache emptied) before
this returns, so the video model has the GPU to itself afterwards.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.hub import pretrained
from huvi.video import fit_frame

logger = logging.getLogger(__name__)

# Width x height shapes SDXL was trained on (its aspect-ratio buckets around 1024 x 1024).
SDXL_BUCKETS = ((1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640), (896, 1152), (832, 1216), (768, 1344), (640, 1536))


def sdxl_size(width: int, height: int, area: int = 1024 * 1024, multiple: int = 64) -> tuple[int, int]:
    """The SDXL bucket nearest the aspect ratio width/height (in log space), rescaled to about `area`
    pixels and rounded to `multiple`: 512x320 (1.6) -> 1344x768 (1.75) at the default area."""
    aspect = np.log(width / height)
    bw, bh = min(SDXL_BUCKETS, key=lambda b: abs(np.log(b[0] / b[1]) - aspect))
    scale = (area / (1024 * 1024)) ** 0.5  # the buckets are SDXL's shapes of nominally 1024^2 pixels
    return max(multiple, round(bw * scale / multiple) * multiple), max(multiple, round(bh * scale / multiple) * multiple)


def load_image(path: Path, width: int, height: int) -> np.ndarray:
    """The user's first frame, resized and centre-cropped to the video size: (height, width, 3) uint8."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            frame = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise HuviError(f"First-frame image {path} not found.") from None
    except (UnidentifiedImageError, OSError) as err:
        raise HuviError(f"{path.name} is not an image huvi can read ({type(err).__name__}); give a PNG or JPEG.") from None
    return fit_frame(frame, width, height)


def _sdxl_pipeline(cfg: HuviConfig, device: torch.device, dtype: torch.dtype):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    ff = cfg.generate.first_frame
    if cfg.model.source == "tiny":
        from huvi.families.sd15.tiny import build_sdxl_components

        pipe = StableDiffusionXLPipeline(**build_sdxl_components())
    else:
        unet = pretrained(UNet2DConditionModel, ff.dpo_unet, subfolder="unet", torch_dtype=dtype)
        pipe = pretrained(StableDiffusionXLPipeline, ff.sdxl_base, unet=unet, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if ff.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device, dtype)
    return pipe


def dpo_sdxl_frame(cfg: HuviConfig, prompt: str, seed: int, device: torch.device, dtype: torch.dtype) -> np.ndarray:
    """A first frame for `prompt` from DPO-SDXL, fitted to the video size: (height, width, 3) uint8."""
    ff = cfg.generate.first_frame
    # The tiny SDXL's VAE downsamples 2x, not 8x: draw it small (its own "native" area).
    area, multiple = (64 * 64, 8) if cfg.model.source == "tiny" else (ff.area, 64)
    width, height = sdxl_size(cfg.data.width, cfg.data.height, area, multiple)
    logger.info("first frame: DPO-SDXL at %dx%d, %d steps, guidance %.1f", width, height, ff.steps, ff.guidance)
    pipe = _sdxl_pipeline(cfg, device, dtype)
    try:
        image = pipe(
            prompt,
            width=width,
            height=height,
            num_inference_steps=ff.steps,
            guidance_scale=ff.guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        ).images[0]  # (h, w, 3) float in [0, 1]
    finally:
        del pipe
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return fit_frame((image * 255).round().clip(0, 255).astype(np.uint8), cfg.data.width, cfg.data.height)


def draw_first_frame(cfg: HuviConfig, prompt: str, seed: int, device: torch.device, dtype: torch.dtype) -> np.ndarray:
    """A first frame for `prompt` when the user gives none, from the preset's first-frame source:
    (height, width, 3) uint8."""
    if cfg.generate.first_frame.source == "shapes":
        from huvi.demo_data import prompt_frame

        logger.info("first frame: a shape drawn for %r (seed %d)", prompt, seed)
        frame = prompt_frame(prompt, seed, max(cfg.data.width, cfg.data.height))
        return fit_frame(frame, cfg.data.width, cfg.data.height)
    return dpo_sdxl_frame(cfg, prompt, seed, device, dtype)
