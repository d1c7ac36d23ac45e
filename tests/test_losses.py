"""Diffusion-DPO loss and the first-frame-conditioned diffusion math, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from huvi.config import DpoStageConfig
from huvi.diffusion import per_sample_error
from huvi.families.sd15.diffusion import SD15_SCHEDULER, first_frame_noisy, prediction_target
from huvi.losses import diffusion_dpo_loss, dpo_inside


def t64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def neg_logsigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))  # -log(1 / (1 + e^-x))


# Three pairs, beta = 10, so -0.5 * beta = -5:
#   pair 0: (0.10 - 0.20) - (0.15 - 0.15) = -0.10  -> inside = +0.50
#   pair 1: (0.30 - 0.25) - (0.30 - 0.20) = -0.05  -> inside = +0.25
#   pair 2: (0.40 - 0.20) - (0.30 - 0.30) = +0.20  -> inside = -1.00
MODEL_W, MODEL_L = t64(0.10, 0.30, 0.40), t64(0.20, 0.25, 0.20)
REF_W, REF_L = t64(0.15, 0.30, 0.30), t64(0.15, 0.20, 0.30)
INSIDE = [0.5, 0.25, -1.0]


def test_loss_matches_hand_computed_values():
    terms = diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=10.0)
    assert terms.inside.tolist() == pytest.approx(INSIDE, abs=1e-12)
    expected = sum(neg_logsigmoid(x) for x in INSIDE) / 3  # mean of per-pair losses, not loss of the mean
    assert terms.loss.item() == pytest.approx(expected, abs=1e-12)
    assert terms.loss.item() != pytest.approx(neg_logsigmoid(sum(INSIDE) / 3), abs=1e-3)
    assert terms.accuracy.item() == pytest.approx(2 / 3)
    assert terms.reward_margin.item() == pytest.approx(sum(INSIDE) / 3, abs=1e-12)
    assert terms.loss.ndim == 0 and terms.inside.shape == (3,)


def test_beta_is_in_the_papers_form():
    """inside = -0.5 * beta * ((e_w - e_l) - (ref_w - ref_l)); the diffusers example's 2500 is 5000 here."""
    diff = (MODEL_W - MODEL_L) - (REF_W - REF_L)
    torch.testing.assert_close(dpo_inside(MODEL_W, MODEL_L, REF_W, REF_L, beta=5000.0), -2500.0 * diff)
    torch.testing.assert_close(dpo_inside(MODEL_W, MODEL_L, REF_W, REF_L, beta=2.0), -1.0 * diff)
    assert DpoStageConfig().beta == 5000.0


def test_inside_equals_reward_margin_rearranged():
    beta = 7.0
    margin = -0.5 * beta * ((MODEL_W - REF_W) - (MODEL_L - REF_L))
    torch.testing.assert_close(dpo_inside(MODEL_W, MODEL_L, REF_W, REF_L, beta), margin)


def test_gradient_lowers_winner_error_and_raises_loser_error():
    model_w = MODEL_W.clone().requires_grad_(True)
    model_l = MODEL_L.clone().requires_grad_(True)
    diffusion_dpo_loss(model_w, model_l, REF_W, REF_L, beta=10.0).loss.backward()
    # d loss / d e_w = 0.5 * beta * sigmoid(-inside) / n > 0, and the opposite for e_l
    expected = torch.tensor([0.5 * 10 * (1 / (1 + math.exp(x))) / 3 for x in INSIDE], dtype=torch.float64)
    torch.testing.assert_close(model_w.grad, expected)
    torch.testing.assert_close(model_l.grad, -expected)


def test_ties_count_half_in_accuracy():
    #                      inside:  +  0  -
    terms = diffusion_dpo_loss(t64(0.1, 0.2, 0.3), t64(0.2, 0.2, 0.2), t64(0.1, 0.2, 0.1), t64(0.1, 0.2, 0.2), beta=10.0)
    assert terms.inside.tolist()[1] == 0.0
    assert terms.accuracy.item() == pytest.approx((1 + 0.5 + 0) / 3)
    terms = diffusion_dpo_loss(t64(0.1, 0.2), t64(0.2, 0.2), t64(0.1, 0.2), t64(0.1, 0.2), beta=10.0)
    assert terms.accuracy.item() == pytest.approx(0.75)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_equal_to_reference_gives_ln2(dtype):
    errors = torch.tensor([0.3, 1.7, 0.02], dtype=dtype)
    other = torch.tensor([0.5, 0.1, 0.9], dtype=dtype)
    terms = diffusion_dpo_loss(errors, other, errors.clone(), other.clone(), beta=5000.0)
    assert torch.count_nonzero(terms.inside) == 0
    assert terms.loss.item() == pytest.approx(math.log(2), abs=1e-7 if dtype == torch.float32 else 1e-15)
    assert terms.accuracy.item() == 0.5
    assert terms.reward_margin.item() == 0.0


# per-sample error ------------------------------------------------------------------------------
def test_per_sample_error_reduces_every_axis_but_batch_and_skips_frame_zero():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 2, 4, 3, 5, generator=g)  # (b, c, f, h, w)
    target = torch.randn(3, 2, 4, 3, 5, generator=g)
    err = per_sample_error(pred, target)
    assert err.shape == (3,)
    expected = ((pred - target)[:, :, 1:] ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(err, expected)

    changed = pred.clone()
    changed[:, :, 0] += 100.0  # frame 0 is the clean condition: not part of the loss
    torch.testing.assert_close(per_sample_error(changed, target), err, rtol=0, atol=0)

    changed = pred.clone()
    changed[1, :, 2] += 1.0  # a later frame of sample 1 only
    moved = per_sample_error(changed, target)
    assert moved[1] > err[1]
    torch.testing.assert_close(moved[[0, 2]], err[[0, 2]], rtol=0, atol=0)


def test_per_sample_error_by_hand_and_in_fp32():
    pred = torch.zeros(2, 1, 3, 1, 2, dtype=torch.float16)  # (b, c, f, h, w)
    target = torch.zeros_like(pred)
    target[0, 0, 1] = torch.tensor([1.0, 3.0])  # squares 1, 9 over 4 values (frames 1-2 x 2 pixels)
    target[1, 0, 2, 0, 0] = 2.0  # square 4 over 4 values
    target[:, :, 0] = 50.0  # frame 0 ignored
    err = per_sample_error(pred, target)
    assert err.dtype == torch.float32
    assert err.tolist() == [pytest.approx(10 / 4), pytest.approx(4 / 4)]


# first-frame conditioning --------------------------------------------------------------------------
@pytest.fixture
def scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SD15_SCHEDULER)


def test_first_frame_stays_clean_and_the_rest_is_noised(scheduler):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 5, 6, 6, generator=g)  # (b, c, f, h, w)
    noise = torch.randn(3, 4, 5, 6, 6, generator=g)
    timesteps = torch.tensor([10, 500, 999])
    noisy = first_frame_noisy(latents, noise, timesteps, scheduler)
    assert noisy.shape == latents.shape
    torch.testing.assert_close(noisy[:, :, 0], latents[:, :, 0], rtol=0, atol=0)
    abar = scheduler.alphas_cumprod[timesteps].view(3, 1, 1, 1, 1)
    expected = abar.sqrt() * latents + (1 - abar).sqrt() * noise  # DDPM eq. 4
    torch.testing.assert_close(noisy[:, :, 1:], expected[:, :, 1:], rtol=1e-5, atol=1e-5)
    for b in range(3):
        assert (noisy[b, :, 1:] - latents[b, :, 1:]).abs().mean() > 0.01
    # near t=T almost nothing of the clean latent is left
    assert abar[2].item() < 0.01


def test_epsilon_target_is_the_noise(scheduler):
    latents, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    assert prediction_target(latents, noise, torch.tensor([1, 2]), scheduler) is noise


def test_the_winner_anchor_pulls_the_winner_as_dpo_does_at_its_strongest():
    """winner_anchor = weight * beta/2 * mean(e_w - ref_w): zero at the reference, gradient weight * beta/2 / n."""
    from huvi.losses import winner_anchor

    ref_w = torch.tensor([0.3, 0.5], dtype=torch.float64)
    model_w = ref_w.clone().requires_grad_(True)
    anchor = winner_anchor(model_w, ref_w, beta=5000.0, weight=0.2)
    assert anchor.item() == 0.0
    anchor.backward()
    torch.testing.assert_close(model_w.grad, torch.full((2,), 0.2 * 2500.0 / 2, dtype=torch.float64))
    dpo = diffusion_dpo_loss(model_w, ref_w + 0.1, ref_w, ref_w + 0.1, beta=5000.0)  # model = reference: ln 2
    assert dpo.loss.item() == pytest.approx(math.log(2))


def test_the_drift_guard_charges_only_the_shift_both_clips_share():
    """drift = beta/4 * ((e_w - ref_w) + (e_l - ref_l)), penalty = weight * mean(drift^2): zero at
    the reference and for any change that only moves e_w - e_l (what DPO learns), and its gradient
    leaves the DPO loss's argument alone (equal on e_w and e_l)."""
    from huvi.losses import drift_penalty

    ref_w, ref_l = torch.tensor([0.3, 0.5], dtype=torch.float64), torch.tensor([0.4, 0.2], dtype=torch.float64)
    assert drift_penalty(ref_w, ref_l, ref_w, ref_l, beta=5000.0, weight=0.01).item() == 0.0
    apart = torch.tensor([0.02, -0.01], dtype=torch.float64)
    assert drift_penalty(ref_w - apart, ref_l + apart, ref_w, ref_l, beta=5000.0, weight=0.01).item() == 0.0
    model_w, model_l = (ref_w + 0.004).requires_grad_(True), (ref_l + 0.004).requires_grad_(True)
    penalty = drift_penalty(model_w, model_l, ref_w, ref_l, beta=5000.0, weight=0.01)
    assert penalty.item() == pytest.approx(0.01 * (1250.0 * 0.008) ** 2)  # drift 10 on both pairs
    penalty.backward()
    torch.testing.assert_close(model_w.grad, model_l.grad)
    torch.testing.assert_close(model_w.grad, torch.full((2,), 0.01 * 2 * 10.0 * 1250.0 / 2, dtype=torch.float64))
