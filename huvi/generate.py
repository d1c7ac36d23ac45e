"""Generate a clip with a trained run: first frame (image or DPO-SDXL), then first-frame-conditioned
video sampling with the run's `motion` and `dpo` adapters at chosen strengths.

`generate()` is what `python -m huvi generate`, the app's Generate tab and the tests call.

    OUT.mp4 (or .gif)      the clip with the adapters at the asked strengths
    OUT.first.png          the first frame it was conditioned on
    OUT.nodpo.mp4          with compare: the same seed without the DPO adapter
    OUT.compare.mp4        with compare: without | with DPO, side by side
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from huvi.adapters import DPO, MOTION, load_adapter
from huvi.backbone import load_encoders, load_scheduler, load_unet
from huvi.cache import encode_frames, encode_prompt
from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.first_frame import dpo_sdxl_frame, load_image
from huvi.io import atomic_write
from huvi.precision import default_device, resolve_precision, weight_dtype
from huvi.runs import Run
from huvi.sampling import decode_latents, make_scheduler, sample_latents
from huvi.video import write_clip

logger = logging.getLogger(__name__)


@dataclass
class GenerateRequest:
    prompt: str
    first_frame: Path | None = None  # the user's image; None: DPO-SDXL draws one from the prompt
    seed: int = 0  # decides the first frame (when drawn) and the video's starting noise
    steps: int | None = None  # None: the run's generate.steps
    guidance: float | None = None  # None: the run's generate.guidance
    dpo_scale: float = 1.0  # strength of the DPO adapter (0 = motion only)
    motion_scale: float = 1.0  # strength of the motion adapter
    compare: bool = False  # also write the same seed without DPO, and both side by side

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise HuviError("Give a prompt describing the video.")
        if self.steps is not None and self.steps < 1:
            raise HuviError(f"steps must be at least 1, not {self.steps}.")
        if self.guidance is not None and self.guidance < 1.0:
            raise HuviError(f"guidance must be at least 1 (1 turns it off), not {self.guidance}.")


@dataclass
class GenerateResult:
    video: Path
    first_frame: Path
    without_dpo: Path | None = None
    compare: Path | None = None


def sibling(out: Path, tag: str, suffix: str | None = None) -> Path:
    """OUT.mp4 -> OUT.{tag}.mp4 (or another suffix)."""
    return out.with_name(f"{out.stem}.{tag}{suffix or out.suffix}")


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two clips (f, h, w, 3) next to each other with a white gap: (f, h, 2w + gap, 3)."""
    white = np.full((*left.shape[:2], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, white, right], axis=2)


def _write_png(path: Path, frame: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(frame).save(tmp, format="PNG"))


def run_config(run_dir: Path) -> HuviConfig:
    """The config a run folder was started with, or a HuviError when it is not a run folder."""
    run = Run(run_dir)
    if not run.exists():
        raise HuviError(f"{run_dir} is not a huvi run folder (no config.yaml); train one with `python -m huvi train`.")
    return run.read_config()


def load_run(run_dir: Path, device: torch.device, dtype: torch.dtype) -> tuple[HuviConfig, torch.nn.Module, list[str]]:
    run = Run(run_dir)
    cfg = run_config(run_dir)
    unet = load_unet(cfg.model)
    present = [name for name in (MOTION, DPO) if run.adapter_path(name).is_file()]
    if not present:
        raise HuviError(f"{run_dir} has no trained adapters yet; let training finish (or resume it) first.")
    for name in present:
        load_adapter(unet, run.adapter_path(name), name)
    return cfg, unet.to(device, dtype).eval(), present  # eval: no LoRA dropout while sampling


def set_strengths(unet: torch.nn.Module, strengths: dict[str, float]) -> None:
    """Activate the adapters in `strengths`, each scaled by its strength (1 = as trained)."""
    unet.set_adapters(list(strengths), list(strengths.values()))


def generate(
    run_dir: Path,
    request: GenerateRequest,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
) -> GenerateResult:
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise HuviError(f"--out must end in .mp4 or .gif, not {out.name}.")
    device = default_device()
    dtype = weight_dtype(resolve_precision("auto"))
    cfg, unet, present = load_run(Path(run_dir), device, dtype)
    if DPO not in present and (request.compare or request.dpo_scale != 0):
        if request.compare:
            raise HuviError(f"{run_dir} has no DPO adapter yet, so there is nothing to compare; train the dpo stage first.")
        logger.warning("%s has no DPO adapter yet: generating with the motion adapter only.", run_dir)
    gen_cfg, data = cfg.generate, cfg.data

    if request.first_frame is not None:
        first = load_image(request.first_frame, data.width, data.height)
    else:
        first = dpo_sdxl_frame(cfg, request.prompt, request.seed, device, dtype)
    encoders = load_encoders(cfg.model)
    encoders.vae.to(device, dtype)
    encoders.text_encoder.to(device, dtype)
    first_latent = encode_frames(encoders.vae, first[None], device)[:, 0].to(device, dtype)  # (c, h, w)
    text = encode_prompt(encoders, request.prompt, device).to(device, dtype)  # (tokens, dim)
    uncond = encode_prompt(encoders, gen_cfg.negative_prompt, device).to(device, dtype)
    encoders.text_encoder.to("cpu")

    scheduler = make_scheduler(gen_cfg.scheduler, load_scheduler(cfg.model))
    steps = request.steps or gen_cfg.steps
    guidance = request.guidance if request.guidance is not None else gen_cfg.guidance

    def run_with(strengths: dict[str, float]) -> np.ndarray:
        set_strengths(unet, strengths)
        latents = sample_latents(
            unet, scheduler, first_latent, text, uncond, data.frames, steps, guidance,
            torch.Generator("cpu").manual_seed(request.seed), progress, show_progress,
        )
        return decode_latents(encoders.vae, latents)  # (f, H, W, 3)

    strengths = {MOTION: request.motion_scale} if MOTION in present else {}
    with_dpo = strengths | ({DPO: request.dpo_scale} if DPO in present else {})
    frames = run_with(with_dpo)
    write_clip(out, frames, gen_cfg.fps)
    result = GenerateResult(video=out, first_frame=sibling(out, "first", ".png"))
    _write_png(result.first_frame, first)
    if request.compare:
        without = run_with(strengths | {DPO: 0.0})
        result.without_dpo = sibling(out, "nodpo")
        result.compare = sibling(out, "compare")
        write_clip(result.without_dpo, without, gen_cfg.fps)
        write_clip(result.compare, side_by_side(without, frames), gen_cfg.fps)
    logger.info("wrote %s (%d frames, seed %d, %d steps, guidance %.1f)", out, len(frames), request.seed, steps, guidance)
    return result

