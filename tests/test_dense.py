"""DenseDPO: segment math against hand-computed values, aligned pairs from partial noising, and
`train --mode dense` on CPU (explicit pairs in category.json: test_pair_edits.py)."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import clip_names, metric_rows, read_meta, tiny_config, with_pairs, write_meta
from safetensors.torch import load_file

from huvi.category import check_category
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.config import load_config
from huvi.diffusion import per_sample_error
from huvi.errors import HuviError
from huvi.evaluate import evaluate_run
from huvi.families.sd15.models import encode_frames, load_encoders, load_scheduler, load_unet
from huvi.families.sd15.sampling import decode_latents, make_scheduler, sample_latents
from huvi.losses import diffusion_dpo_loss, segment_dpo_loss
from huvi.pairs import ExplicitPair, Pair, SegmentPair, form_pairs, segment_pairs
from huvi.runs import Run
from huvi.segments import label_signs, orient, padded_signs, segment_errors, segment_frames, segment_masks, segment_spans
from huvi.trainer import train
from huvi.video import read_clip

LN2 = math.log(2)


def t64(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def neg_logsigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


# segments ----------------------------------------------------------------------------------------
def test_segments_split_the_window_and_leave_out_frame_zero():
    assert segment_frames(1, 8) == [range(1, 8)]
    assert segment_frames(2, 8) == [range(1, 4), range(4, 8)]
    assert segment_frames(4, 16) == [range(1, 4), range(4, 8), range(8, 12), range(12, 16)]
    assert segment_frames(8, 8)[0] == range(1, 1)  # segment 0 is frame 0 alone: nothing to compare
    with pytest.raises(ValueError):
        segment_frames(3, 8)
    assert segment_spans(4, 16, 2) == [(0, 8), (8, 16), (16, 24), (24, 32)]  # source frames, for a timeline
    masks = segment_masks([2, 1], 4)  # (pairs, max count, frames)
    assert masks.tolist() == [[[0, 1, 0, 0], [0, 0, 1, 1]], [[0, 1, 1, 1], [0, 0, 0, 0]]]


def test_label_signs():
    assert label_signs(["a", "b", "tie", None], 8) == (1, -1, 0, 0)
    assert label_signs(["a"], 8) == (1,)
    assert label_signs(["a", "b", "b", "a", "a", "b", "a", "b"], 8) == (0, -1, -1, 1, 1, -1, 1, -1)  # segment 0 = frame 0
    assert padded_signs([(1, -1), (1,)]).tolist() == [[1, -1], [1, 0]]


def test_one_segment_error_is_the_per_sample_error():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 5, 5, generator=g), torch.randn(3, 4, 8, 5, 5, generator=g)
    errors = segment_errors(pred, target, segment_masks([1, 1, 1], 8))  # (3, 1), fp32 like per_sample_error
    torch.testing.assert_close(errors[:, 0], per_sample_error(pred, target), rtol=1e-6, atol=0)  # a mean of frame means: rounding only


def test_segment_errors_by_hand():
    pred = torch.zeros(1, 1, 4, 1, 2)  # (b, c, f, h, w)
    target = torch.zeros_like(pred)
    target[0, 0, 0] = 50.0  # frame 0: in no segment
    target[0, 0, 1] = torch.tensor([1.0, 3.0])  # frame 1 mean square 5
    target[0, 0, 2] = torch.tensor([2.0, 0.0])  # frame 2: 2
    target[0, 0, 3] = torch.tensor([4.0, 0.0])  # frame 3: 8
    errors = segment_errors(pred, target, segment_masks([2], 4))
    assert errors.tolist() == [[pytest.approx(5.0), pytest.approx((2 + 8) / 2)]]


def test_dense_settings_are_checked(tmp_path, capsys):
    cfg = load_config("tiny")
    assert (cfg.dpo.mode, cfg.dense.eta, cfg.dense.segment_frames) == ("clip", 0.75, 4)
    for override, named in [("dpo.mode=segments", "dpo.mode"), ("dense.eta=0", "dense.eta"), ("dense.segment_frames=0", "dense.segment_frames")]:
        with pytest.raises(HuviError, match=named):
            load_config("tiny", [override])
    assert main(["train", "--category", str(tmp_path), "--out", str(tmp_path / "run"), "--resume", "--mode", "dense"]) == EXIT_BAD_INPUT
    assert "--mode" in capsys.readouterr().err


# the segment loss ------------------------------------------------------------------------------------
MODEL_A, MODEL_B = t64([0.10, 0.30, 0.40]), t64([0.20, 0.25, 0.20])
REF_A, REF_B = t64([0.15, 0.30, 0.30]), t64([0.15, 0.20, 0.30])
# beta = 10: inside per segment (as if a were the winner) = -5 * ((a - b) - (ref_a - ref_b))
INSIDE_A = [0.5, 0.25, -1.0]


def test_one_segment_with_one_label_is_the_clip_level_loss():
    for i in range(3):
        args = (MODEL_A[:, i : i + 1], MODEL_B[:, i : i + 1], REF_A[:, i : i + 1], REF_B[:, i : i + 1])
        seg = segment_dpo_loss(*args, signs=torch.ones(1, 1), beta=10.0)
        clip = diffusion_dpo_loss(*(x[:, 0] for x in args), beta=10.0)
        assert seg.loss.item() == clip.loss.item() == pytest.approx(neg_logsigmoid(INSIDE_A[i]), abs=1e-12)
        assert seg.accuracy.item() == clip.accuracy.item() and seg.reward_margin.item() == clip.reward_margin.item()
        # label b: the same as the clip-level loss with b the winner
        seg = segment_dpo_loss(*args, signs=-torch.ones(1, 1), beta=10.0)
        clip = diffusion_dpo_loss(args[1][:, 0], args[0][:, 0], args[3][:, 0], args[2][:, 0], beta=10.0)
        assert seg.loss.item() == clip.loss.item() == pytest.approx(neg_logsigmoid(-INSIDE_A[i]), abs=1e-12)


def test_mixed_labels_by_hand():
    """Two pairs of three segments with the errors above, labelled (a, a, b) and (a, b, tie)."""
    signs = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 0.0]])
    model_a, model_b = torch.stack([MODEL_A[0], MODEL_A[0]]), torch.stack([MODEL_B[0], MODEL_B[0]])
    ref_a, ref_b = torch.stack([REF_A[0], REF_A[0]]), torch.stack([REF_B[0], REF_B[0]])
    terms = segment_dpo_loss(model_a, model_b, ref_a, ref_b, signs, beta=10.0)
    # pair 0: a, a, b -> sign * inside = 0.5, 0.25, +1.0; pair 1: a, b, tie -> 0.5, -0.25 (tie dropped)
    signed = [0.5, 0.25, 1.0, 0.5, -0.25]
    assert terms.loss.item() == pytest.approx(sum(map(neg_logsigmoid, signed)) / 5, abs=1e-12)
    assert terms.accuracy.item() == pytest.approx(4 / 5)
    assert terms.reward_margin.item() == pytest.approx(sum(signed) / 5, abs=1e-12)
    assert terms.inside.shape == (5,)


def test_tied_segments_give_zero_gradient():
    # through the per-segment errors: frames of a tied segment get no gradient at all
    g = torch.Generator().manual_seed(1)
    pred_a = torch.randn(1, 2, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pred_b = torch.randn(1, 2, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 8, 3, 3, generator=g, dtype=torch.float64)
    masks = segment_masks([4], 8)  # frames 1 | 2-3 | 4-5 | 6-7
    e_a, e_b = segment_errors(pred_a, target, masks), segment_errors(pred_b, target, masks)
    ref_a, ref_b = e_a.detach() * 1.1, e_b.detach() * 0.9
    signs = torch.tensor([[1.0, 0.0, -1.0, 0.0]])  # a, tie, b, unlabelled
    segment_dpo_loss(e_a, e_b, ref_a, ref_b, signs, beta=10.0).loss.backward()
    for grad in (pred_a.grad, pred_b.grad):
        assert torch.count_nonzero(grad[:, :, [0, 2, 3, 6, 7]]) == 0  # frame 0, the tie, the unlabelled
        assert torch.count_nonzero(grad[:, :, 1]) > 0 and torch.count_nonzero(grad[:, :, 4:6]) > 0
    # and at the level of segment errors
    model_a, model_b = MODEL_A.clone().requires_grad_(True), MODEL_B.clone().requires_grad_(True)
    segment_dpo_loss(model_a, model_b, REF_A, REF_B, torch.tensor([[0.0, 1.0, 0.0]]), beta=10.0).loss.backward()
    assert model_a.grad[0, [0, 2]].tolist() == [0.0, 0.0] and model_a.grad[0, 1] > 0 > model_b.grad[0, 1]


def test_model_equal_to_reference_gives_ln2_per_segment():
    errors, other = torch.rand(2, 4), torch.rand(2, 4)
    signs = torch.tensor([[1.0, -1.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0]])
    terms = segment_dpo_loss(errors, other, errors.clone(), other.clone(), signs, beta=5000.0)
    assert terms.loss.item() == pytest.approx(LN2, abs=1e-7) and terms.accuracy.item() == 0.5
    with pytest.raises(ValueError):
        segment_dpo_loss(errors, other, errors, other, torch.zeros(2, 4), beta=1.0)
    w, l = orient(errors, other, signs)
    assert torch.equal(w, torch.stack([errors[0, 0], other[0, 1], errors[0, 3], other[1, 2]]))
    assert torch.equal(l, torch.stack([other[0, 0], errors[0, 1], other[0, 3], errors[1, 2]]))


# pairs -------------------------------------------------------------------------------------------------
def test_explicit_pairs_in_each_mode():
    explicit = [
        ExplicitPair("x", "y", segments=("a", "tie")),
        ExplicitPair("p", "q", winner="b"),
        ExplicitPair("u", "v", winner="a", segments=(None, None)),  # no segment label yet: its winner counts
        ExplicitPair("m", "n", segments=("tie", "tie")),  # ties only
        ExplicitPair("j", "k"),  # unlabelled
    ]
    assert set(form_pairs({}, 0, explicit)) == {Pair("q", "p"), Pair("u", "v")}
    assert form_pairs({"r": 5, "s": 1}, 3) == form_pairs({"r": 5, "s": 1}, 3, ())  # ratings alone: unchanged
    dense = segment_pairs(explicit, 8, seed=0)
    assert set(dense) == {SegmentPair("x", "y", (1, 0)), SegmentPair("p", "q", (-1,)), SegmentPair("u", "v", (1,))}
    assert segment_pairs(explicit, 8, seed=0) == dense  # the order is the seed's alone


# training ------------------------------------------------------------------------------------------------
def _labelled(root) -> None:
    """Pairs written by hand: segment labels, a clip-level winner, an unlabelled pair."""
    r0, r2, r4 = sorted(n for n in read_meta(root)["scores"] if n.startswith("right"))
    l1, l3, l5 = sorted(n for n in read_meta(root)["scores"] if n.startswith("left"))
    with_pairs(root, [
        {"a": r0, "b": l1, "segments": ["a", "tie", "a", "b"]},
        {"a": l3, "b": r2, "segments": ["b", "b"]},
        {"a": r4, "b": l5, "winner": "a"},
        {"a": r0, "b": r2, "segments": [None, None]},
    ])


DENSE_STEPS = ["--set", "motion.steps=1", "--set", "dpo.steps=3", "--set", "dpo.eval_samples=2", "--set", "dpo.eval_every=3", "--set", "data.holdout=0.34"]


@pytest.fixture(scope="module")
def dense_run(category, tmp_path_factory):
    root = tmp_path_factory.mktemp("dense") / "squares"
    shutil.copytree(category, root)
    _labelled(root)
    out = root.parent / "run"
    assert main(["train", "--category", str(root), "--out", str(out), "--preset", "tiny", "--mode", "dense", *DENSE_STEPS]) == 0
    return root, out


def test_dense_training_starts_at_ln2(dense_run, caplog):
    root, out = dense_run
    assert Run(out).read_config().dpo.mode == "dense"
    rows = [r for r in metric_rows(out) if r["stage"] == "dpo"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    first = rows[0]
    assert abs(first["loss"] - LN2) < 1e-6 and first["accuracy"] == 0.5 and first["reward_margin"] == 0.0
    assert first["loss_w"] == first["ref_loss_w"] and first["loss_l"] == first["ref_loss_l"]
    assert all(r["labelled_segments"] in (1.0, 2.0, 3.0) for r in rows)
    assert any(abs(r["loss"] - LN2) > 1e-5 for r in rows[1:])
    assert 0.0 <= rows[-1]["val_accuracy"] <= 1.0  # a held-out pair, scored per segment
    info = Run(out).read_info()  # 3 labelled pairs (the unlabelled one is skipped), one held out
    assert (info["pairs"], info["held_out_pairs"]) == (2, 1)
    scores = evaluate_run(out, root, samples=1, show_progress=False)
    assert (scores.pairs, scores.segments) == (3, 6) and 0 <= scores.accuracy <= 1
    assert evaluate_run(out, root, samples=1, show_progress=False, mode="clip").segments is None


def test_dense_resume_equals_an_uninterrupted_run(dense_run, tmp_path):
    root, out = dense_run
    run_dir = tmp_path / "run"
    cfg = Run(out).read_config()

    def stop() -> bool:
        rows = metric_rows(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        return bool(rows) and (rows[-1]["stage"], rows[-1]["step"]) == ("dpo", 1)

    assert train(cfg, root, run_dir, should_stop=stop, show_progress=False).stopped
    train(cfg, root, run_dir, resume=True, show_progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in metric_rows(run_dir)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in metric_rows(out)]
    got, want = load_file(str(Run(run_dir).adapter_path("dpo"))), load_file(str(Run(out).adapter_path("dpo")))
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_one_segment_trains_like_the_clip_level_loss(category_copy, tmp_path):
    """One pair, labelled with one segment "a" and with winner "a": the same first DPO step in both
    modes (same pair, noise and timestep; the errors differ by float rounding only, since a segment
    error is a mean of frame means)."""
    meta = read_meta(category_copy)
    meta["scores"] = {name: 3 for name in meta["scores"]}  # no rating pairs: the explicit pair alone
    a, b = sorted(meta["scores"])[:2]
    meta["pairs"] = [{"a": a, "b": b, "winner": "a", "segments": ["a"]}]
    write_meta(category_copy, meta)
    rows = {}
    for mode in ("clip", "dense"):
        cfg = load_config("tiny", ["motion.steps=1", "dpo.steps=1", "data.temporal_crop=false", f"dpo.mode={mode}"])
        train(cfg, category_copy, tmp_path / mode, show_progress=False)
        rows[mode] = metric_rows(tmp_path / mode)[-1]
    clip, dense = rows["clip"], rows["dense"]
    assert clip["loss"] == dense["loss"] == pytest.approx(LN2, abs=1e-6) and clip["accuracy"] == dense["accuracy"] == 0.5
    for key in ("loss_w", "loss_l", "ref_loss_w", "ref_loss_l", "grad_norm"):
        assert dense[key] == pytest.approx(clip[key], rel=1e-5), key
    assert dense["labelled_segments"] == 1.0


def test_dense_mode_without_labels_says_what_to_do(category_copy, tmp_path, caplog):
    a, b = clip_names(category_copy)[:2]
    with_pairs(category_copy, [{"a": a, "b": b, "segments": ["tie", None]}])
    with caplog.at_level(logging.INFO, logger="huvi"), pytest.raises(HuviError, match="No preference pairs to train on in dense mode; label the segments"):
        train(load_config("tiny", ["dpo.mode=dense"]), category_copy, tmp_path / "run", show_progress=False)
    assert "1 explicit pairs are unlabelled or tied throughout, so dense mode skips them" in caplog.text
    assert not (tmp_path / "run").exists()


# aligned pairs ------------------------------------------------------------------------------------------
def test_partial_noising_keeps_frame_zero_and_the_source():
    cfg = tiny_config()
    unet, scheduler = load_unet(cfg.model), make_scheduler("ddim", load_scheduler(cfg.model))
    g = torch.Generator().manual_seed(0)
    init = torch.randn(1, 4, 5, 16, 16, generator=g)
    text, uncond = torch.randn(77, 32, generator=g), torch.zeros(77, 32)

    def run(seed: int, strength: float) -> torch.Tensor:
        return sample_latents(unet, scheduler, init[0, :, 0], text, uncond, 5, 4, 1.0, torch.Generator().manual_seed(seed), show_progress=False, init=init, strength=strength)

    steps = []
    one, two = run(1, 0.75), run(2, 0.75)
    assert torch.equal(one[0, :, 0], init[0, :, 0]) and torch.equal(two[0, :, 0], init[0, :, 0])
    assert not torch.allclose(one[:, :, 1:], two[:, :, 1:])
    light = run(1, 0.25)  # one step from t = 250: still close to the source
    assert (light - init)[:, :, 1:].abs().mean() < (one - init)[:, :, 1:].abs().mean()
    sample_latents(unet, scheduler, init[0, :, 0], text, uncond, 5, 4, 1.0, torch.Generator().manual_seed(1), lambda i, n: steps.append(n), False, init, 0.75)
    assert steps == [3] * 3  # round(0.75 * 4) of the 4 steps


def test_cli_dense_pairs_writes_an_aligned_pair(dense_run, category_copy, capsys):
    run = dense_run[1]
    source = clip_names(category_copy)[0]
    code = main(["dense-pairs", "--run", str(run), "--category", str(category_copy), "--clips", source, "--seed", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    pair = json.loads(out.strip().splitlines()[-1])
    assert pair["a"].endswith("aligned-s4-a.mp4") and pair["b"].endswith("aligned-s4-b.mp4")
    assert pair["segments"] == [None] * 6  # 24 frames / dense.segment_frames 4, unlabelled
    assert pair["aligned"]["source"] == source and pair["aligned"]["eta"] == 0.75
    assert read_meta(category_copy)["pairs"] == [pair]

    cfg = Run(run).read_config()
    data = cfg.data
    a, b = (read_clip(category_copy / "clips" / pair[k], data.width, data.height, stride=data.stride).astype(float) for k in "ab")
    assert a.shape == b.shape == (data.frames, data.height, data.width, 3)
    # Frame 0 of both is the source's frame 0 through the VAE (exactly, before writing: the sampler
    # holds it, see test_partial_noising_...). H.264 is lossy on the tiny VAE's noise-like output
    # (~10-17 grey levels here) and codes each file's first frame with its own rate control, so
    # after reading back: frame 0 of a and b are far closer than any later pair of frames, and
    # nearer the source's round trip than any later frame is.
    vae = load_encoders(cfg.model).vae
    src = read_clip(category_copy / "clips" / source, data.width, data.height, stride=data.stride, max_frames=1)
    round_trip = decode_latents(vae, encode_frames(vae, src, torch.device("cpu"))[None])[0].astype(float)
    later = np.abs(a[1:] - b[1:]).mean(axis=(1, 2, 3))
    assert np.abs(a[0] - b[0]).mean() < 0.4 * later.min(), (np.abs(a[0] - b[0]).mean(), later)
    for clip in (a, b):
        errors = [np.abs(frame - round_trip).mean() for frame in clip]
        assert errors[0] < min(errors[1:])
    # valid to store, unlabelled (a warning), and the generated clips are not "unrated" warnings
    problems = check_category(category_copy, data)
    assert [p.level for p in problems].count("error") == 0
    assert not any("has no score" in p.message for p in problems)
    assert any("has no label yet" in p.message for p in problems)
    # the same seed again would overwrite the clips: refused
    assert main(["dense-pairs", "--run", str(run), "--category", str(category_copy), "--clips", source, "--seed", "4"]) == EXIT_BAD_INPUT
    assert "choose another --seed" in capsys.readouterr().err
