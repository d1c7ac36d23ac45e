"""Aligned pairs for DenseDPO (Wu et al. 2025): two clips that share a category clip's motion and
layout and differ in detail, so a person can say per segment which one is better.

A source clip's first `data.frames` frames (at `data.stride`, what training reads) are encoded,
latent frames 1.. are noised to strength eta (SDEdit on the family's own noising: DDPM for SD1.5,
flow matching for Wan; latent frame 0, the source's frame 0, stays clean) and denoised twice with
two different noise seeds by the run's current model (its motion adapter, and its DPO adapter once
trained). Both go into the category and are recorded as an unlabelled pair:

    clips/{stem}.aligned-s{seed}-a.mp4, clips/{stem}.aligned-s{seed}-b.mp4
    category.json  "pairs": [..., {"a": ..., "b": ..., "segments": [null, null, ...],
                                   "aligned": {"source", "eta", "start_timestep", "seeds", "run"}}]

Each generated frame is written `data.stride` times at `generate.fps * data.stride` frames per
second: the file plays like a `generate` clip, and reading it back at `data.stride` gives exactly
the generated frames, so the segments a person labels are the frames training compares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from huvi.adapters import MOTION
from huvi.batches import derived_seed
from huvi.category import clip_frames, load_category
from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.families import frames_per_latent
from huvi.generate import RunModel, run_config
from huvi.model_cache import ModelCache
from huvi.pair_edits import add_pair
from huvi.pairs import ExplicitPair
from huvi.runs import Run
from huvi.segments import count_choices, default_count, segment_counts, what_segments_split
from huvi.video import write_clip

logger = logging.getLogger(__name__)


def segment_count(cfg: HuviConfig, per_latent: int, segments: int | None = None) -> int:
    """Segments of a new aligned pair: `segments`, or dense.segment_frames frames each (huvi.segments;
    `per_latent`: the model family's video frames per latent frame)."""
    frames = cfg.data.frames
    choices = count_choices(frames, per_latent)
    if segments is None:
        count = default_count(frames, cfg.dense.segment_frames, per_latent)
        if count is None:
            raise HuviError(
                f"dense.segment_frames ({cfg.dense.segment_frames}) does not divide {what_segments_split(frames, per_latent)}; "
                f"give the number of segments with --segments ({choices})."
            )
        return count
    if segments not in segment_counts(frames, per_latent):
        raise HuviError(f"--segments must divide {what_segments_split(frames, per_latent)} ({choices}), not be {segments}.")
    return segments


def aligned_names(source: str, seed: int) -> tuple[str, str]:
    """File names of the two clips made from `source` with `seed`."""
    stem = Path(source).stem
    return f"{stem}.aligned-s{seed}-a.mp4", f"{stem}.aligned-s{seed}-b.mp4"


def make_aligned_pairs(
    run_dir: Path,
    category_dir: Path,
    clips: Sequence[str] | None = None,
    eta: float | None = None,
    seed: int = 0,
    segments: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
    models: ModelCache | None = None,
) -> list[ExplicitPair]:
    """Make one aligned pair per source clip (default: every rated clip) with the run's model,
    write its clips into the category and record it, unlabelled, in category.json.

    eta: SDEdit strength (None: the run's dense.eta); seed: decides both clips' noise (two derived
    seeds per source); segments: the pair's segment count (None: from dense.segment_frames).
    `progress(done, total)` is called after each generated clip. `models`: where the app keeps
    a loaded model between requests; without it the run's model is loaded for this call.
    """
    run_dir, category_dir = Path(run_dir), Path(category_dir)
    # Every check before the model loads: a typo costs no model load (nor GPU time).
    cfg = run_config(run_dir)
    if not Run(run_dir).adapter_path(MOTION).is_file():
        raise HuviError(f"{run_dir} has no motion adapter yet; train its motion stage first (train --stage motion).")
    eta = cfg.dense.eta if eta is None else eta
    if not 0.0 < eta <= 1.0:
        raise HuviError(f"eta must be in (0, 1] (0.75 keeps the motion), not {eta}.")
    count = segment_count(cfg, frames_per_latent(cfg.model), segments)
    category = load_category(category_dir)
    known = {clip.name: clip for clip in category.clips}
    sources = list(clips) if clips else sorted(category.scores)
    for name in sources:
        if name not in known:
            raise HuviError(f"{name} is not a clip of {category.name}; name a file in {category_dir / 'clips'} that category.json uses.")
        for out in aligned_names(name, seed):
            if (category_dir / "clips" / out).exists():
                raise HuviError(f"{out} already exists in {category.name}; choose another --seed.")

    model = models.get(run_dir) if models is not None else RunModel(run_dir)
    text = model.encode_prompt(category.prompt)  # (tokens, dim)
    uncond = model.encode_prompt(cfg.generate.negative_prompt)
    gen_cfg, data = cfg.generate, cfg.data
    start_timestep = model.family.sdedit_timestep(model.family.sampler(gen_cfg.scheduler), gen_cfg.steps, eta)

    made = []
    for i, name in enumerate(sources):
        frames = clip_frames(known[name].path, data)[: data.frames]  # (f, H, W, 3)
        latents = model.encode_frames(frames)  # (c, f, h, w)
        seeds = [derived_seed(seed, name, side) for side in ("a", "b")]
        names = aligned_names(name, seed)
        for k, (out, noise_seed) in enumerate(zip(names, seeds)):
            generated = model.sample(
                dict.fromkeys(model.present, 1.0), latents[:, 0], text, uncond, noise_seed,
                show_progress=show_progress, init=latents[None], strength=eta,
            )  # (f, H, W, 3)
            write_clip(category_dir / "clips" / out, np.repeat(generated, data.stride, axis=0), gen_cfg.fps * data.stride)
            if progress is not None:
                progress(2 * i + k + 1, 2 * len(sources))
        aligned = {"source": name, "eta": eta, "start_timestep": start_timestep, "seeds": seeds, "run": str(run_dir)}
        pair = ExplicitPair(names[0], names[1], segments=(None,) * count, aligned=aligned)
        add_pair(category_dir, pair)
        made.append(pair)
        logger.info("aligned pair %s from %s (eta %.2f, t = %d, %d segments)", pair.name, name, eta, start_timestep, count)
    return made
