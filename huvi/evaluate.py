"""How well the DPO adapter's implicit reward ranks clip pairs like their ratings."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from huvi.adapters import DPO, MOTION, active_adapters, load_adapter, set_active
from huvi.backbone import load_encoders, load_scheduler, load_unet
from huvi.batches import derived_seed
from huvi.cache import ClipLatents, cache_category
from huvi.category import load_category
from huvi.dpo import denoising_errors
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
def clip_errors(
    unet: torch.nn.Module,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    batch: int = 8,
    progress: tqdm | None = None,
) -> torch.Tensor:
    """Denoising error of every clip under every draw: latents (n, c, f, h, w), noise (k, c, f, h, w),
    timesteps (k,) -> (n, k). Draw j uses the same noise and timestep for every clip."""
    n, k = latents.shape[0], noise.shape[0]
    clip_index = torch.arange(n).repeat_interleave(k)  # (n k,)
    draw_index = torch.arange(k).repeat(n)
    out = []
    for rows in torch.arange(n * k).split(batch):
        ci, di = clip_index[rows], draw_index[rows]
        with autocast():
            out.append(denoising_errors(unet, scheduler, latents[ci], noise[di], timesteps[di], text.expand(len(rows), -1, -1)).float().cpu())
        if progress is not None:
            progress.update(len(rows))
    return torch.cat(out).view(n, k)


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
    show_progress: bool = False,
) -> PairScores:
    """Average each pair's implicit reward margin over `samples` (noise, timestep) draws.

    Every clip is scored under the same draws (one noise per draw, timesteps spread evenly by
    `eval_timesteps`), on its first `frames` frames, unflipped; the model is the UNet as it is (motion
    and dpo adapters active), the reference the same UNet with only the motion adapter.
    """
    if not pairs:
        return PairScores(0, float("nan"), float("nan"))
    was_training = unet.training
    unet.eval()
    names = sorted({p.winner for p in pairs} | {p.loser for p in pairs})
    row = {name: i for i, name in enumerate(names)}
    latents = torch.stack([clips[n].latents[:, :frames] for n in names]).to(device, text.dtype)  # (n, c, f, h, w)
    gen = torch.Generator().manual_seed(derived_seed(seed, "eval"))
    noise = torch.randn((samples, *latents.shape[1:]), generator=gen).to(device, text.dtype)  # (k, c, f, h, w)
    timesteps = eval_timesteps(samples, scheduler.config.num_train_timesteps).to(device)
    text = text.to(device).unsqueeze(0)  # (1, tokens, dim)
    with tqdm(total=2 * len(names) * samples, desc="scoring clips", unit="clip", disable=not show_progress) as bar:
        model = clip_errors(unet, scheduler, latents, noise, timesteps, text, autocast, progress=bar)  # (n, k)
        with active_adapters(unet, [MOTION]):
            ref = clip_errors(unet, scheduler, latents, noise, timesteps, text, autocast, progress=bar)
    unet.train(was_training)
    w = torch.tensor([row[p.winner] for p in pairs])
    l = torch.tensor([row[p.loser] for p in pairs])
    margin = dpo_inside(model[w], model[l], ref[w], ref[l], beta).mean(dim=1)  # (pairs,)
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
    unet.to(device)
    if dtype != torch.float32:
        unet.to(dtype=dtype)
    return score_pairs(
        unet, load_scheduler(cfg.model), latents.clips, pairs, latents.prompt_embeds.to(dtype), cfg.data.frames,
        cfg.dpo.beta, samples or cfg.dpo.eval_samples, cfg.seed, device,
        lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), show_progress,
    )
