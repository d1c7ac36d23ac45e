"""Losses of the two stages, as pure functions of per-sample denoising errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
