"""How well the DPO adapter's implicit reward ranks clip pairs like their ratings, or the segments
of explicit pairs like their segment labels (DenseDPO)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from huvi.adapters import DPO, MOTION, active_adapters, load_adapter, set_active
from huvi.batches import derived_seed
from huvi.cache import ClipLatents, cache_category
from huvi.category import check_pair_lengths, load_category
from huvi.diffusion import per_sample_error
from huvi.dpo import Reduce, denoising_errors
from huvi.families import family_for
from huvi.families.base import ModelFamily
from huvi.losses import dpo_inside
from huvi.pairs import Pair, SegmentPair, form_pairs, segment_pairs
from huvi.precision import default_device, resolve_precision, weight_dtype
from huvi.runs import Run
from huvi.segments import frame_errors, pool_segments, segment_masks


@dataclass
class PairScores:
    pairs: int
    accuracy: float  # share of pairs (segments) whose mean implicit reward margin is > 0 (ties 0.5)
    reward_margin: float  # mean over pairs (segments) of the implicit reward margin
    segments: int | None = None  # segment level: how many labelled segments were scored

    def as_dict(self) -> dict:
        out = {"pairs": self.pairs, "accuracy": round(self.accuracy, 4), "reward_margin": round(self.reward_margin, 6)}
        return out | ({"segments": self.segments} if self.segments is not None else {})


@torch.no_grad()
def clip_errors(
    unet: torch.nn.Module,
    family: ModelFamily,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    batch: int = 8,
    progress: tqdm | None = None,
    reduce: Reduce = per_sample_error,
) -> torch.Tensor:
    """Denoising error of every clip under every draw: latents (n, c, f, h, w), noise (k, c, f, h, w),
    timesteps (k,) -> (n, k), or (n, k, f) per frame with reduce=frame_errors. Draw j uses the same
    noise and timestep for every clip."""
    n, k = latents.shape[0], noise.shape[0]
    clip_index = torch.arange(n).repeat_interleave(k)  # (n k,)
    draw_index = torch.arange(k).repeat(n)
    out = []
    for rows in torch.arange(n * k).split(batch):
        ci, di = clip_index[rows], draw_index[rows]
        with autocast():
            out.append(denoising_errors(unet, family, latents[ci], noise[di], timesteps[di], text.expand(len(rows), -1, -1), reduce).float().cpu())
        if progress is not None:
            progress.update(len(rows))
    errors = torch.cat(out)  # (n k,) or (n k, f)
    return errors.view(n, k, *errors.shape[1:])


def _accuracy(margin: torch.Tensor) -> float:
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()


def _segment_margins(
    model: torch.Tensor, ref: torch.Tensor, row: dict[str, int], pairs: list[SegmentPair], frames: int, per_latent: int, beta: float
) -> torch.Tensor:
    """Each labelled segment's reward margin, oriented by its label: per-latent-frame errors (n, k, f) -> (segments,)."""
    margins = []
    for pair in pairs:
        masks = segment_masks([len(pair.signs)], frames, per_latent)  # (1, s, f)
        a, b = row[pair.a], row[pair.b]
        inside = dpo_inside(*(pool_segments(e, masks) for e in (model[a], model[b], ref[a], ref[b])), beta).mean(dim=0)  # (s,)
        signs = torch.tensor(pair.signs, dtype=inside.dtype)
        margins.append((signs * inside)[signs != 0])
    return torch.cat(margins)


def score_pairs(
    unet: torch.nn.Module,
    family: ModelFamily,
    clips: dict[str, ClipLatents],
    pairs: list[Pair] | list[SegmentPair],
    text: torch.Tensor,
    frames: int,
    beta: float,
    samples: int,
    seed: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    show_progress: bool = False,
    min_noise: float = 0.0,
) -> PairScores:
    """Average each pair's implicit reward margin over `samples` (noise, timestep) draws; for
    segment pairs, each labelled segment's margin, oriented by its label (DenseDPO).

    Every clip is scored under the same draws (one noise per draw, timesteps spread evenly by
    the family's `eval_timesteps` above quantile `min_noise`, as DPO trained), on the latent frames of its first `frames` frames, unflipped;
    the model is the UNet as it is (motion and dpo adapters active), the reference the same UNet
    with only the motion adapter.
    """
    if not pairs:
        return PairScores(0, float("nan"), float("nan"))
    per_segment = isinstance(pairs[0], SegmentPair)
    was_training = unet.training
    unet.eval()
    names = sorted({name for p in pairs for name in ((p.a, p.b) if per_segment else (p.winner, p.loser))})
    row = {name: i for i, name in enumerate(names)}
    latents = torch.stack([clips[n].latents[:, : family.latent_frames(frames)] for n in names]).to(device, text.dtype)  # (n, c, f, h, w)
    gen = torch.Generator().manual_seed(derived_seed(seed, "eval"))
    noise = torch.randn((samples, *latents.shape[1:]), generator=gen).to(device, text.dtype)  # (k, c, f, h, w)
    timesteps = family.eval_timesteps(samples, min_noise).to(device)
    text = text.to(device).unsqueeze(0)  # (1, tokens, dim)
    reduce = frame_errors if per_segment else per_sample_error
    try:  # training goes on after an out-of-memory error here (huvi.trainer): leave the mode as it was
        with tqdm(total=2 * len(names) * samples, desc="scoring clips", unit="clip", disable=not show_progress) as bar:
            model = clip_errors(unet, family, latents, noise, timesteps, text, autocast, progress=bar, reduce=reduce)  # (n, k) or (n, k, f)
            with active_adapters(unet, [MOTION]):
                ref = clip_errors(unet, family, latents, noise, timesteps, text, autocast, progress=bar, reduce=reduce)
    finally:
        unet.train(was_training)
    if per_segment:
        margin = _segment_margins(model, ref, row, pairs, frames, family.frames_per_latent, beta)  # (labelled segments,)
        return PairScores(len(pairs), _accuracy(margin), margin.mean().item(), len(margin))
    w = torch.tensor([row[p.winner] for p in pairs])
    l = torch.tensor([row[p.loser] for p in pairs])
    margin = dpo_inside(model[w], model[l], ref[w], ref[l], beta).mean(dim=1)  # (pairs,)
    return PairScores(len(pairs), _accuracy(margin), margin.mean().item())


def evaluate_run(run_dir: Path, category_dir: Path, samples: int | None = None, show_progress: bool = True, mode: str | None = None) -> PairScores:
    """Score a category's pairs (seen or not by the run) with the run's adapters.

    mode "clip" scores every distinct-score pair and explicit pair with a winner; "dense" every
    labelled segment of the explicit pairs. None: the run's dpo.mode.
    """
    run = Run(run_dir)
    cfg = run.read_config()
    mode = mode or cfg.dpo.mode
    category = load_category(category_dir)
    device = default_device()
    dtype = weight_dtype(resolve_precision(cfg.precision))
    family = family_for(cfg.model)
    latents = cache_category(category, cfg, family.load_encoders, device, show_progress)
    check_pair_lengths(category, {name: clip.latents.shape[1] for name, clip in latents.clips.items()}, cfg.data, family.frames_per_latent)
    unet = family.load_denoiser(dtype)
    for name in (MOTION, DPO):
        load_adapter(unet, run.adapter_path(name), name)
    set_active(unet, [MOTION, DPO], trainable=None)
    unet.to(device, dtype)
    if mode == "dense":
        pairs = segment_pairs(category.pairs, cfg.data.frames, cfg.seed, family.frames_per_latent)
    else:
        pairs = form_pairs(category.scores, cfg.seed, category.pairs, cfg.data.min_rating_gap)
    return score_pairs(
        unet, family, latents.clips, pairs, latents.prompt_embeds.to(dtype), cfg.data.frames,
        cfg.dpo.beta, samples or cfg.dpo.eval_samples, cfg.seed, device,
        lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), show_progress, cfg.dpo.min_noise,
    )
