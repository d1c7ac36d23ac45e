"""Losses of the DPO stage, as pure functions of per-sample (or per-segment) denoising errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from huvi.segments import orient


@dataclass
class DpoTerms:
    loss: torch.Tensor  # scalar
    inside: torch.Tensor  # (n,) the sigmoid's argument per pair
    accuracy: torch.Tensor  # scalar, share of pairs with inside > 0 (ties count 0.5)
    reward_margin: torch.Tensor  # scalar, mean implicit reward of winner minus loser


def dpo_inside(model_w: torch.Tensor, model_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float) -> torch.Tensor:
    """Diffusion-DPO's sigmoid argument (Wallace et al. 2024, eq. 14, per-sample form):

        inside = -0.5 * beta * ((e_w - e_l) - (ref_w - ref_l))

    e_* are the trained model's per-sample denoising errors, ref_* the reference model's, all (n,)
    for the same noise and timestep. beta is in the paper's form (5000 for SD1.5); it equals the
    implicit reward margin, -0.5 * beta * ((e_w - ref_w) - (e_l - ref_l)), rearranged.
    """
    return -0.5 * beta * ((model_w - model_l) - (ref_w - ref_l))


def diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta: float) -> DpoTerms:
    """loss = mean over pairs of -log sigmoid(inside); never reduced over the batch before the sigmoid."""
    inside = dpo_inside(model_w, model_l, ref_w, ref_l, beta)  # (n,)
    loss = -F.logsigmoid(inside).mean()
    accuracy = ((inside > 0).float() + 0.5 * (inside == 0).float()).mean()
    return DpoTerms(loss=loss, inside=inside.detach(), accuracy=accuracy.detach(), reward_margin=inside.detach().mean())


def winner_anchor(model_w: torch.Tensor, ref_w: torch.Tensor, beta: float, weight: float) -> torch.Tensor:
    """A supervised term on the winners beside the DPO loss, against over-optimisation:

        weight * (beta / 2) * mean(e_w - ref_w)

    Its gradient is the winners' denoising loss's, scaled so that weight 1 pulls as hard as DPO at
    its strongest (d loss / d e_w = (beta / 2) * sigmoid(-inside) <= beta / 2). DPO alone can lower its
    loss by making the winners worse too, as long as the losers get worse faster (the model
    degrades); this term charges every bit the winners lose. It is zero while the model equals
    the reference, so the first step still has loss ln 2. (Winner SFT as in RPO, Pang et al. 2024.)
    """
    return weight * 0.5 * beta * (model_w - ref_w).mean()


def drift_penalty(model_w, model_l, ref_w, ref_l, beta: float, weight: float) -> torch.Tensor:
    """A guard on what the DPO loss leaves free: the shift both clips' errors share.

        drift = (beta / 4) * ((e_w - ref_w) + (e_l - ref_l)),   penalty = weight * mean(drift^2)

    drift is minus the mean of the two clips' implicit rewards, r = -(beta / 2) * (e - ref). The DPO
    loss sees only r_w - r_l, so nothing stops a small adapter from raising every clip's error, by
    an amount that differs from clip to clip; on held-out clips that clip-specific shift is as large
    as the preference's own margin and decides many pairs (docs/LEARNING.md). This term is
    zero at the reference (the first step's loss stays ln 2) and leaves r_w - r_l, the DPO loss's
    argument, untouched: it only charges the shared shift.
    """
    drift = 0.25 * beta * ((model_w - ref_w) + (model_l - ref_l))  # (n,)
    return weight * drift.pow(2).mean()


def segment_dpo_loss(model_a, model_b, ref_a, ref_b, signs: torch.Tensor, beta: float) -> DpoTerms:
    """DenseDPO's segment loss (Wu et al. 2025): Diffusion-DPO applied to each labelled segment.

    model_*, ref_*: (n, s) per-segment errors of clips a and b of n pairs (`huvi.segments`), under
    one noise and timestep per pair; signs: (n, s), +1 where a is better, -1 where b is, 0 for
    ties, unlabelled and padding segments. With inside_k = dpo_inside on segment k's errors,

        loss = mean over labelled segments k of -log sigmoid(sign_k * inside_k)

    which is `diffusion_dpo_loss` over the labelled segments, each oriented so its better clip is
    the winner (inside is antisymmetric in a and b). Segments with sign 0 are dropped: they add
    nothing and get zero gradient. Accuracy and reward margin are per labelled segment.
    """
    model_w, model_l = orient(model_a, model_b, signs)  # (m,) each
    ref_w, ref_l = orient(ref_a, ref_b, signs)
    if model_w.numel() == 0:
        raise ValueError("segment_dpo_loss needs at least one labelled segment")
    return diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta)
