"""Generate a clip with a trained run: first frame (image or DPO-SDXL), then first-frame-conditioned
video sampling with the run's `motion` and `dpo` adapters at chosen strengths.

`RunModel` is a run's video model loaded once, in the run's precision, through its model family
(huvi.families): the denoiser with its adapters, the VAE and text encoder, and the noise schedule. `generate()` (the CLI, the tests) loads one for a single clip; the app
keeps one between Generate clicks (huvi.model_cache). DenseDPO's aligned pairs (huvi.dense) sample
with it too.

    OUT.mp4 (or .gif)      the clip with the adapters at the asked strengths
    OUT.json               what made it: prompt, seed, steps, guidance, strengths (`list_samples` reads them back)
    OUT.first.png          the first frame it was conditioned on
    OUT.nodpo.mp4          with compare: the same seed without the DPO adapter
    OUT.compare.mp4        with compare: without | with DPO, side by side
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from huvi.adapters import DPO, MOTION, load_adapter
from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.families import family_for
from huvi.families.base import Encoders
from huvi.first_frame import draw_first_frame, load_image
from huvi.io import atomic_write, write_json
from huvi.precision import default_device, precision_name, resolve_precision, weight_dtype
from huvi.runs import Run
from huvi.video import write_clip

logger = logging.getLogger(__name__)


@dataclass
class GenerateRequest:
    prompt: str
    first_frame: Path | None = None  # the user's image; None: the preset's first-frame source draws one (DPO-SDXL, or a shape)
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
    settings: Path | None = None  # OUT.json
    without_dpo: Path | None = None
    compare: Path | None = None


@dataclass(frozen=True)
class Sample:
    """A clip generated earlier, with what made it (OUT.json)."""

    video: Path
    settings: dict  # GenerateRequest's fields, with the steps and guidance actually used


def list_samples(run_dir: Path) -> list[Sample]:
    """The clips generated with a run into RUN/samples/ (the app's), newest first."""
    folder = Path(run_dir) / "samples"
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        video = next((v for v in (path.with_suffix(".mp4"), path.with_suffix(".gif")) if v.is_file()), None)
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if video is not None and isinstance(settings, dict):
            found.append(Sample(video, settings))
    return sorted(found, key=lambda sample: sample.video.stat().st_mtime, reverse=True)


def sibling(out: Path, tag: str, suffix: str | None = None) -> Path:
    """OUT.mp4 -> OUT.{tag}.mp4 (or another suffix)."""
    return out.with_name(f"{out.stem}.{tag}{suffix or out.suffix}")


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two clips (f, h, w, 3) next to each other with a white gap: (f, h, 2w + gap, 3)."""
    white = np.full((*left.shape[:2], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, white, right], axis=2)


def _write_png(path: Path, frame: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(frame).save(tmp, format="PNG"))


def check_out(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise HuviError(f"--out must end in .mp4 or .gif, not {out.name}.")
    return out


def run_config(run_dir: Path) -> HuviConfig:
    """The config a run folder was started with, or a HuviError when it is not a run folder."""
    run = Run(run_dir)
    if not run.exists():
        raise HuviError(f"{run_dir} is not a huvi run folder (no config.yaml); train one with `python -m huvi train`.")
    return run.read_config()


def trained_adapters(run_dir: Path) -> list[str]:
    """The adapters a run has written (motion, dpo), or a HuviError when it has none yet."""
    run = Run(run_dir)
    present = [name for name in (MOTION, DPO) if run.adapter_path(name).is_file()]
    if not present:
        raise HuviError(f"{run_dir} has no trained adapters yet; let training finish (or resume it) first.")
    return present


def set_strengths(unet: torch.nn.Module, strengths: dict[str, float]) -> None:
    """Activate the adapters in `strengths`, each scaled by its strength (1 = as trained)."""
    unet.set_adapters(list(strengths), list(strengths.values()))


class RunModel:
    """A run's video model, loaded once for sampling in the run's precision (`precision: auto`:
    bf16 or fp16 on a GPU, fp32 on a CPU): the denoiser with its trained adapters, the VAE and text
    encoder (which wait on the CPU between uses), and the family's noise schedule."""

    def __init__(self, run_dir: Path, device: torch.device | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = run_config(self.run_dir)
        self.present = trained_adapters(self.run_dir)
        self.device = device or default_device()
        self.precision = resolve_precision(self.cfg.precision)
        self.dtype = weight_dtype(self.precision)
        run = Run(self.run_dir)
        self.family = family_for(self.cfg.model)
        self.unet = self.family.load_denoiser(self.dtype)
        for name in self.present:
            load_adapter(self.unet, run.adapter_path(name), name)
        self.unet.to(self.device, self.dtype).eval()  # eval: no LoRA dropout while sampling
        self.encoders: Encoders = self.family.load_encoders(self.dtype)
        logger.info("loaded %s for sampling (%s, %s precision, adapters %s)", self.run_dir.name, self.device, precision_name(self.precision), "+".join(self.present))

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(tokens, dim) embeddings in the model's dtype, on its device; the text encoder visits the device."""
        encoder = self.encoders.text_encoder.to(self.device)
        try:
            return self.encoders.encode_prompt(prompt, self.device).to(self.device, self.dtype)
        finally:
            encoder.to("cpu")

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(f, H, W, 3) uint8 -> (c, f, h, w) latents in the model's dtype, on its device."""
        vae = self.encoders.vae.to(self.device)
        try:
            return self.encoders.encode_frames(frames, self.device).to(self.device, self.dtype)
        finally:
            vae.to("cpu")

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(1, c, f, h, w) latents -> (f, H, W, 3) uint8 frames."""
        vae = self.encoders.vae.to(self.device)
        try:
            return self.encoders.decode(latents)
        finally:
            vae.to("cpu")

    def sample(
        self,
        strengths: dict[str, float],
        first: torch.Tensor,
        text: torch.Tensor,
        uncond: torch.Tensor,
        seed: int,
        steps: int | None = None,
        guidance: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        show_progress: bool = True,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> np.ndarray:
        """One clip with the adapters at `strengths`, frame 0 held at `first` (c, h, w): (f, H, W, 3)
        uint8. `init` and `strength` make it SDEdit from a clip (see huvi.families.base.ModelFamily.sample)."""
        gen_cfg = self.cfg.generate
        set_strengths(self.unet, {name: value for name, value in strengths.items() if name in self.present})
        latents = self.family.sample(
            self.unet, self.family.sampler(gen_cfg.scheduler), first, text, uncond, self.family.latent_frames(self.cfg.data.frames),
            steps or gen_cfg.steps, gen_cfg.guidance if guidance is None else guidance,
            torch.Generator("cpu").manual_seed(seed), progress, show_progress, init=init, strength=strength,
        )
        return self.decode(latents)

    def generate(
        self,
        request: GenerateRequest,
        out: Path,
        progress: Callable[[int, int], None] | None = None,
        show_progress: bool = True,
    ) -> GenerateResult:
        out = check_out(out)
        if DPO not in self.present and (request.compare or request.dpo_scale != 0):
            if request.compare:
                raise HuviError(f"{self.run_dir} has no DPO adapter yet, so there is nothing to compare; train the dpo stage first.")
            logger.warning("%s has no DPO adapter yet: generating with the motion adapter only.", self.run_dir)
        gen_cfg, data = self.cfg.generate, self.cfg.data
        if request.first_frame is not None:
            first = load_image(request.first_frame, data.width, data.height)
        else:
            first = draw_first_frame(self.cfg, request.prompt, request.seed, self.device, self.dtype)
        first_latent = self.encode_frames(first[None])[:, 0]  # (c, h, w)
        text, uncond = self.encode_prompt(request.prompt), self.encode_prompt(gen_cfg.negative_prompt)
        steps = request.steps or gen_cfg.steps
        guidance = request.guidance if request.guidance is not None else gen_cfg.guidance

        def run_with(dpo: float) -> np.ndarray:
            strengths = {MOTION: request.motion_scale, DPO: dpo}
            return self.sample(strengths, first_latent, text, uncond, request.seed, steps, guidance, progress, show_progress)

        frames = run_with(request.dpo_scale)
        write_clip(out, frames, gen_cfg.fps)
        result = GenerateResult(video=out, first_frame=sibling(out, "first", ".png"), settings=out.with_suffix(".json"))
        _write_png(result.first_frame, first)
        used = asdict(request) | {"steps": steps, "guidance": guidance, "first_frame": str(request.first_frame) if request.first_frame else None}
        write_json(result.settings, used)
        if request.compare:
            without = run_with(0.0)
            result.without_dpo = sibling(out, "nodpo")
            result.compare = sibling(out, "compare")
            write_clip(result.without_dpo, without, gen_cfg.fps)
            write_clip(result.compare, side_by_side(without, frames), gen_cfg.fps)
        logger.info("wrote %s (%d frames, seed %d, %d steps, guidance %.1f, %s)", out, len(frames), request.seed, steps, guidance, precision_name(self.precision))
        return result


def generate(
    run_dir: Path,
    request: GenerateRequest,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
) -> GenerateResult:
    """Load the run's model and generate one clip (and, with `request.compare`, its no-DPO twin)."""
    return RunModel(run_dir).generate(request, check_out(out), progress, show_progress)
