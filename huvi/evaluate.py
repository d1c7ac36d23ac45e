"""How well the DPO adapter's implicit reward ranks clip pairs like their ratings."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from huvi.adapters import DPO, MOTION, load_adapter, set_active
from huvi.backbone import load_encoders, load_scheduler, load_unet
from huvi.batches import derived_seed
from huvi.cache import ClipLatents, cache_category
from huvi.category import load_category
from huvi.dpo import pair_errors
from huvi.losses import dpo_inside
from huvi.pairs import Pair, form_pairs
from huvi.precision import default_device, resolve_precision, weight_dtype
from huvi.runs import Run


@dataclass
class PairScores:
    pairs: int
    accuracy: float  # share of pairs whose mean implicit reward margin is > 0 (ties 0.5)
    reward_margin: float  # mean over pairs of the implicit reward margin

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "accuracy": round(self.accuracy, 4), "reward_margin": round(self.reward_margin, 6)}


def eval_timesteps(samples: int, num_train_timesteps: int) -> torch.Tensor:
    """`samples` timesteps spread evenly over [0, T): the centres of equal strata."""
    return ((torch.arange(samples) + 0.5) * num_train_timesteps / samples).long()


@torch.no_grad()
def score_pairs(
    unet: torch.nn.Module,
    scheduler,
    clips: dict[str, ClipLatents],
    pairs: list[Pair],
    text: torch.Tensor,
    frames: int,
    beta: float,
    samples: int,
    seed: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    draws_per_forward: int = 4,
    show_progress: bool = False,
) -> PairScores:
    """Average the implicit reward margin of each pair over `samples` (noise, timestep) draws.

    Each draw uses one noise for both clips and a timestep from `eval_timesteps`; the clips' first
    `frames` frames, unflipped. The UNet must have the motion and dpo adapters active.
    """
    if not pairs:
        return PairScores(0, float("nan"), float("nan"))
    was_training = unet.training
    unet.eval()
    text = text.to(device)
    all_t = eval_timesteps(samples, scheduler.config.num_train_timesteps)
    margins = []
    for index, pair in enumerate(tqdm(pairs, desc="scoring pairs", unit="pair", disable=not show_progress)):
        w = clips[pair.winner].latents[:, :frames]  # (c, f, h, w)
        l = clips[pair.loser].latents[:, :frames]
        gen = torch.Generator().manual_seed(derived_seed(seed, "eval", index))
        inside = []
        for t in all_t.split(draws_per_forward):
            k = len(t)
            noise = torch.randn((k, *w.shape), generator=gen).to(device)  # (k, c, f, h, w)
            lat_w = w.unsqueeze(0).expand(k, -1, -1, -1, -1).to(device)
            lat_l = l.unsqueeze(0).expand(k, -1, -1, -1, -1).to(device)
            errors = pair_errors(unet, unet, scheduler, lat_w, lat_l, text, noise, t.to(device), autocast)
            inside.append(dpo_inside(*errors, beta=beta).float().cpu())
        margins.append(torch.cat(inside).mean())
    unet.train(was_training)
    margin = torch.stack(margins)  # (pairs,)
    accuracy = ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()
    return PairScores(len(pairs), accuracy, margin.mean().item())


def evaluate_run(run_dir: Path, category_dir: Path, samples: int | None = None, show_progress: bool = True) -> PairScores:
    """Score every distinct-score pair of a category (seen or not by the run) with the run's adapters."""
    run = Run(run_dir)
    cfg = run.read_config()
    category = load_category(category_dir)
    pairs = form_pairs(category.scores, cfg.seed)
    device = default_device()
    dtype = weight_dtype(resolve_precision(cfg.precision))
    latents = cache_category(category, cfg, lambda: load_encoders(cfg.model), device, show_progress)
    unet = load_unet(cfg.model)
    for name in (MOTION, DPO):
        load_adapter(unet, run.adapter_path(name), name)
    set_active(unet, [MOTION, DPO], trainable=None)
    unet.to(device, dtype)
    return score_pairs(
        unet, load_scheduler(cfg.model), latents.clips, pairs, latents.prompt_embeds.to(dtype), cfg.data.frames,
        cfg.dpo.beta, samples or cfg.dpo.eval_samples, cfg.seed, device,
        lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), show_progress=show_progress,
    )
