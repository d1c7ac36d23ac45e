"""Preview clips during training: the same first frame, prompt and seed every time, so a row of
previews shows what the adapters learned between them.

The first frame is frame 0 of the best-rated clip (its cached latent: no SDXL, no encoding); the
VAE waits on the CPU and visits the GPU only to decode. Sampling draws from its own generator and
runs without gradients, so previews leave training's random state and results untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch

from huvi.backbone import load_encoders
from huvi.cache import CategoryLatents, encode_prompt
from huvi.config import HuviConfig
from huvi.sampling import decode_latents, make_scheduler, sample_latents
from huvi.video import write_clip


class Previewer:
    def __init__(self, cfg: HuviConfig, latents: CategoryLatents, scores: dict[str, int], train_scheduler, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        best = max(sorted(latents.clips), key=lambda name: scores[name])
        self.first = latents.clips[best].latents[:, 0]  # (c, h, w)
        self.text = latents.prompt_embeds
        encoders = load_encoders(cfg.model)
        self.uncond = encode_prompt(encoders, cfg.generate.negative_prompt, torch.device("cpu"))
        self.vae = encoders.vae  # stays on the CPU between previews
        self.scheduler = make_scheduler(cfg.generate.scheduler, train_scheduler)

    @torch.no_grad()
    def write(self, unet: torch.nn.Module, path: Path) -> None:
        gen = self.cfg.generate
        dtype = next(unet.parameters()).dtype
        was_training = unet.training
        unet.eval()
        try:
            latents = sample_latents(
                unet, self.scheduler, self.first.to(self.device, dtype), self.text.to(self.device, dtype),
                self.uncond.to(self.device, dtype), self.cfg.data.frames, gen.steps, gen.guidance,
                torch.Generator("cpu").manual_seed(self.cfg.seed), show_progress=False,
            )
            self.vae.to(self.device)
            frames = decode_latents(self.vae, latents.float())
        finally:
            self.vae.to("cpu")
            unet.train(was_training)
        write_clip(path, frames, gen.fps)
