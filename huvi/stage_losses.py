"""The loss of one micro-batch of each stage, drawn from the cached latents (huvi.trainer steps on it).

    motion   the denoising loss of `motion.batch_size` rated clips, each a random temporal window (and flip)
    dpo      Diffusion-DPO on `dpo.batch_size` pairs, winner and loser cropped alike, one noise and
             timestep per pair, plus the winner anchor (dpo.sft_weight) and the drift guard
             (dpo.drift_weight) when they are on (huvi.losses)
    dense    DenseDPO: one term per labelled segment of `dpo.batch_size` explicit pairs (no temporal crop)

Every random draw comes from `gen` and the batch from `position` (huvi.batches), so a micro-batch is
a pure function of the run's seed, the stage, the step and the process.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from huvi.adapters import MOTION
from huvi.batches import crop_and_flip, sample_indices
from huvi.cache import CategoryLatents
from huvi.config import HuviConfig
from huvi.dpo import denoising_errors, pair_errors
from huvi.families.base import ModelFamily
from huvi.losses import DpoTerms, diffusion_dpo_loss, drift_penalty, segment_dpo_loss, winner_anchor
from huvi.pairs import Pair, SegmentPair
from huvi.segments import orient, padded_signs, segment_masks


@dataclass
class StageLosses:
    cfg: HuviConfig
    latents: CategoryLatents
    rated: list[str]  # the clips the motion stage learns from
    pairs: list[Pair] | list[SegmentPair]  # the DPO stage's training pairs
    base: torch.nn.Module  # the model itself (unwrapped): with only its motion adapter active, the DPO reference
    family: ModelFamily  # noising, target and model call (huvi.families)
    device: torch.device
    dtype: torch.dtype  # of the frozen weights: latents, noise and text are cast to it
    autocast: Callable[[], AbstractContextManager]

    def for_stage(self, stage: str) -> Callable[[torch.nn.Module, torch.Generator, int], tuple[torch.Tensor, dict]]:
        """(model, gen, position) -> (loss, stats) of a micro-batch of `stage`."""
        if stage == MOTION:
            return self.motion
        return self.dense if self.cfg.dpo.mode == "dense" else self.dpo

    def _text(self, n: int) -> torch.Tensor:
        return self.latents.prompt_embeds.to(self.device, self.dtype).unsqueeze(0).expand(n, -1, -1)  # (n, tokens, dim)

    def _noise(self, shape, gen: torch.Generator, low: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(shape, generator=gen).to(self.device, self.dtype)
        timesteps = self.family.sample_timesteps(shape[0], gen, low).to(self.device)
        return noise, timesteps

    def motion(self, model, gen: torch.Generator, position: int) -> tuple[torch.Tensor, dict]:
        cfg, clips = self.cfg, [self.latents.clips[name] for name in self.rated]
        index = sample_indices(len(clips), cfg.seed, position, cfg.motion.batch_size)
        latents = torch.cat([crop_and_flip([clips[i]], self.family.latent_frames(cfg.data.frames), cfg.data.temporal_crop, cfg.data.hflip, gen) for i in index])
        latents = latents.to(self.device, self.dtype)  # (b, c, f, h, w)
        noise, timesteps = self._noise(latents.shape, gen)
        with self.autocast():
            loss = denoising_errors(model, self.family, latents, noise, timesteps, self._text(len(index))).mean()
        return loss, {"loss": loss.item()}

    def _pair_latents(self, names: list[tuple[str, str]], crop: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents of the first and second clip of each pair, cropped and flipped alike: each (b, c, f, h, w)."""
        data, clips = self.cfg.data, self.latents.clips
        groups = [crop_and_flip([clips[first], clips[second]], self.family.latent_frames(data.frames), crop, data.hflip, gen) for first, second in names]  # each (2, c, f, h, w)
        first = torch.stack([g[0] for g in groups]).to(self.device, self.dtype)  # (b, c, f, h, w)
        second = torch.stack([g[1] for g in groups]).to(self.device, self.dtype)
        return first, second

    def _pair_errors(self, model, latents_1: torch.Tensor, latents_2: torch.Tensor, gen: torch.Generator, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """`pair_errors` under this micro-batch's noise and timestep (drawn from `gen`)."""
        noise, timesteps = self._noise(latents_1.shape, gen, self.cfg.dpo.min_noise)
        text = self.latents.prompt_embeds.to(self.device, self.dtype)
        return pair_errors(model, self.base, self.family, latents_1, latents_2, text, noise, timesteps, self.autocast, masks)

    @staticmethod
    def _dpo_stats(terms: DpoTerms, model_w, model_l, ref_w, ref_l) -> dict:
        return {
            "loss": terms.loss.item(),
            "accuracy": terms.accuracy.item(),
            "reward_margin": terms.reward_margin.item(),
            "loss_w": model_w.mean().item(),
            "loss_l": model_l.mean().item(),
            "ref_loss_w": ref_w.mean().item(),
            "ref_loss_l": ref_l.mean().item(),
        }

    def dpo(self, model, gen: torch.Generator, position: int) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        index = sample_indices(len(self.pairs), cfg.seed, position, cfg.dpo.batch_size)
        pairs = [self.pairs[i] for i in index]
        latents_w, latents_l = self._pair_latents([(p.winner, p.loser) for p in pairs], cfg.data.temporal_crop, gen)
        model_w, model_l, ref_w, ref_l = self._pair_errors(model, latents_w, latents_l, gen)
        terms = diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, cfg.dpo.beta)
        return self._regularised(terms, model_w, model_l, ref_w, ref_l), self._dpo_stats(terms, model_w, model_l, ref_w, ref_l)

    def _regularised(self, terms: DpoTerms, model_w, model_l, ref_w, ref_l) -> torch.Tensor:
        """The loss to step on: DPO's, plus the winner anchor (dpo.sft_weight) and the drift guard
        (dpo.drift_weight) when they are on."""
        dpo, loss = self.cfg.dpo, terms.loss
        if dpo.sft_weight:
            loss = loss + winner_anchor(model_w, ref_w, dpo.beta, dpo.sft_weight)
        if dpo.drift_weight:
            loss = loss + drift_penalty(model_w, model_l, ref_w, ref_l, dpo.beta, dpo.drift_weight)
        return loss

    def dense(self, model, gen: torch.Generator, position: int) -> tuple[torch.Tensor, dict]:
        """DenseDPO: one noise and timestep per pair, one loss term per labelled segment. Segments are
        fixed runs of the latent frames of the first data.frames frames, so there is no temporal crop."""
        cfg = self.cfg
        index = sample_indices(len(self.pairs), cfg.seed, position, cfg.dpo.batch_size)
        pairs = [self.pairs[i] for i in index]
        latents_a, latents_b = self._pair_latents([(p.a, p.b) for p in pairs], False, gen)
        masks = segment_masks([len(p.signs) for p in pairs], cfg.data.frames, self.family.frames_per_latent).to(self.device)  # (b, s, f latent)
        signs = padded_signs([p.signs for p in pairs]).to(self.device)  # (b, s)
        model_a, model_b, ref_a, ref_b = self._pair_errors(model, latents_a, latents_b, gen, masks)  # each (b, s)
        terms = segment_dpo_loss(model_a, model_b, ref_a, ref_b, signs, cfg.dpo.beta)
        model_w, model_l = orient(model_a, model_b, signs)  # (m,) each: better / worse clip per labelled segment
        ref_w, ref_l = orient(ref_a, ref_b, signs)
        stats = self._dpo_stats(terms, model_w.detach(), model_l.detach(), ref_w, ref_l) | {"labelled_segments": float(model_w.numel())}
        return self._regularised(terms, model_w, model_l, ref_w, ref_l), stats
