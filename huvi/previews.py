"""Preview clips during training: the same first frame, prompts and seed every time, so a row of
previews shows what the adapters learned between them.

    RUN/previews/{stage}-{step:06d}.mp4       the category's prompt
    RUN/previews/{stage}-{step:06d}.p{i}.mp4  generate.preview_prompts[i - 1], when set

The first frame is frame 0 of the best-rated clip (its cached latent: no SDXL, no encoding); the
VAE waits on the CPU and visits the GPU only to decode. Sampling draws from its own generator and
runs without gradients, so previews leave training's random state and results untouched.
`list_previews` reads them back in training order, for the app's gallery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from huvi.cache import CategoryLatents
from huvi.config import HuviConfig
from huvi.families.base import ModelFamily
from huvi.runs import STAGES
from huvi.video import write_clip


class Previewer:
    def __init__(self, cfg: HuviConfig, latents: CategoryLatents, scores: dict[str, int], family: ModelFamily, device: torch.device) -> None:
        self.cfg, self.family, self.device = cfg, family, device
        best = max(sorted(latents.clips), key=lambda name: scores[name])
        self.first = latents.clips[best].latents[:, 0]  # (c, h, w)
        self.encoders = family.load_encoders()
        cpu = torch.device("cpu")
        self.texts = [latents.prompt_embeds] + [self.encoders.encode_prompt(prompt, cpu) for prompt in cfg.generate.preview_prompts]
        self.uncond = self.encoders.encode_prompt(cfg.generate.negative_prompt, cpu)
        self.vae = self.encoders.vae  # stays on the CPU between previews
        self.sampler = family.sampler(cfg.generate.scheduler)

    @torch.no_grad()
    def write(self, unet: torch.nn.Module, path: Path) -> None:
        """One clip per prompt: `path` for the category's, `prompt_path(path, i)` for the others."""
        gen = self.cfg.generate
        dtype = next(unet.parameters()).dtype
        was_training = unet.training
        unet.eval()
        try:
            for i, text in enumerate(self.texts):
                latents = self.family.sample(
                    unet, self.sampler, self.first.to(self.device, dtype), text.to(self.device, dtype),
                    self.uncond.to(self.device, dtype), self.family.latent_frames(self.cfg.data.frames), gen.steps, gen.guidance,
                    torch.Generator("cpu").manual_seed(self.cfg.seed), show_progress=False,
                )
                self.vae.to(self.device)
                frames = self.encoders.decode(latents.float())
                self.vae.to("cpu")
                write_clip(prompt_path(path, i), frames, gen.fps)
        finally:
            self.vae.to("cpu")
            unet.train(was_training)


def prompt_path(path: Path, index: int) -> Path:
    """Where the preview for prompt `index` goes: 0 (the category's) at `path`, i at STEM.p{i}.mp4."""
    return path if index == 0 else path.with_name(f"{path.stem}.p{index}{path.suffix}")


_PREVIEW = re.compile(r"(motion|dpo)-(\d+)(?:\.p(\d+))?")


@dataclass(frozen=True)
class PreviewClip:
    path: Path
    stage: str
    step: int
    prompt: int  # 0: the category's prompt; i: generate.preview_prompts[i - 1]


def list_previews(run_dir: Path) -> list[PreviewClip]:
    """Every preview clip of a run, in training order (stage, step, prompt)."""
    folder = Path(run_dir) / "previews"
    found = []
    for path in folder.glob("*.mp4") if folder.is_dir() else ():
        if match := _PREVIEW.fullmatch(path.stem):
            found.append(PreviewClip(path, match[1], int(match[2]), int(match[3] or 0)))
    return sorted(found, key=lambda c: (STAGES.index(c.stage), c.step, c.prompt))
