"""DenseDPO on the Wan family (tiny random components): segments as runs of Wan's latent frames,
the first dense DPO step, evaluate per segment, and aligned pairs by flow-matching SDEdit."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from helpers import metric_rows, read_meta, write_meta

import huvi.dense
from huvi.category import check_category, clip_frames
from huvi.config import load_config
from huvi.dense import make_aligned_pairs
from huvi.evaluate import evaluate_run
from huvi.families import family_for
from huvi.pair_view import pair_segments
from huvi.pairs import ExplicitPair
from huvi.runs import Run
from huvi.segments import default_count, label_signs, segment_counts, segment_latents, segment_masks, segment_spans
from huvi.trainer import train

WAN = 4  # video frames per latent frame after the first (the causal VAE)


def test_wan_segments_are_runs_of_whole_latent_frames():
    family = family_for(load_config("wan-tiny").model)
    assert family.frames_per_latent == WAN and family.latent_frames(33) == segment_masks([1], 33, WAN).shape[-1] == 9
    # 9 frames = frame 0 + 2 latent frames of 4: (pairs, max count, latent frames), latent frame 0 in no segment
    assert segment_masks([2, 1], 9, WAN).tolist() == [[[0, 1, 0], [0, 0, 1]], [[0, 1, 1], [0, 0, 0]]]
    # 33 frames = 9 latent frames: 4 segments of 2 latent frames, latent frame 0 joining segment 0
    assert segment_latents(4, 33, WAN) == [range(3), range(3, 5), range(5, 7), range(7, 9)]
    assert segment_masks([4], 33, WAN).tolist() == [[
        [0, 1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1, 1],
    ]]
    # in a clip file: video frames 0-4 | 5-8 (latent frame j >= 1 is frames 4j-3..4j), here at stride 3
    assert segment_spans(2, 9, 3, WAN) == [(0, 15), (15, 27)]
    assert segment_spans(4, 33, 1, WAN) == [(0, 9), (9, 17), (17, 25), (25, 33)]
    assert label_signs(["b", "a"], 9, WAN) == (-1, 1)  # segment 0 holds latent frame 1: its label counts
    # a count that would cut a latent frame is refused, not rounded
    assert segment_counts(9, WAN) == [1, 2] and segment_counts(49, WAN) == [1, 2, 3, 4, 6, 12]
    with pytest.raises(ValueError, match="3 segments do not divide the 8 training frames after frame 0 into whole latent frames of 4"):
        segment_masks([3], 9, WAN)
    assert (default_count(9, 4, WAN), default_count(33, 8, WAN), default_count(9, 2, WAN)) == (2, 4, None)


@pytest.fixture(scope="module")
def wan_dense_run(category, tmp_path_factory):
    """A copy of the category with segment labels (2 per pair: one per latent frame after the first)
    and a clip-level winner, and a wan-tiny run trained on it in dense mode."""
    root = tmp_path_factory.mktemp("wan-dense") / "squares"
    shutil.copytree(category, root)
    meta = read_meta(root)
    r0, r2, r4 = sorted(n for n in meta["scores"] if n.startswith("right"))
    l1, l3, l5 = sorted(n for n in meta["scores"] if n.startswith("left"))
    meta["pairs"] = [
        {"a": r0, "b": l1, "segments": ["a", "b"]},
        {"a": l3, "b": r2, "segments": ["tie", "b"]},
        {"a": r4, "b": l5, "winner": "a"},
    ]
    write_meta(root, meta)
    overrides = ["dpo.mode=dense", "motion.steps=1", "dpo.steps=2", "dpo.eval_every=2", "dpo.eval_samples=1", "data.holdout=0.34"]
    train(load_config("wan-tiny", overrides), root, root.parent / "run", show_progress=False)
    return root, root.parent / "run"


def test_first_dense_dpo_step_on_wan_is_ln2(wan_dense_run):
    _, out = wan_dense_run
    rows = [r for r in metric_rows(out) if r["stage"] == "dpo"]
    first = rows[0]
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["accuracy"] == 0.5 and first["reward_margin"] == 0.0
    assert first["loss_w"] == first["ref_loss_w"] and first["loss_l"] == first["ref_loss_l"]
    assert all(r["labelled_segments"] in (1.0, 2.0) for r in rows)
    assert 0.0 <= rows[-1]["val_accuracy"] <= 1.0  # the held-out pair, scored per segment


def test_evaluate_in_dense_mode_scores_each_labelled_segment_on_wan(wan_dense_run):
    root, out = wan_dense_run
    scores = evaluate_run(out, root, samples=1, show_progress=False, mode="dense")
    assert (scores.pairs, scores.segments) == (3, 4)  # 2 + 1 (the tie dropped) + 1 (the winner)
    assert 0.0 <= scores.accuracy <= 1.0 and math.isfinite(scores.reward_margin)


def test_dense_pairs_on_wan_hold_the_source_first_frame(wan_dense_run, tmp_path, monkeypatch):
    root = tmp_path / "squares"
    shutil.copytree(wan_dense_run[0], root)
    written, write_clip = {}, huvi.dense.write_clip

    def keep(path, frames, fps):  # what dense-pairs generated, before the lossy video codec
        written[path.name] = frames
        return write_clip(path, frames, fps)

    monkeypatch.setattr(huvi.dense, "write_clip", keep)
    source = min(read_meta(root)["scores"])
    [pair] = make_aligned_pairs(wan_dense_run[1], root, [source], seed=2, show_progress=False)
    assert pair.segments == (None, None)  # the 8 frames after frame 0 / dense.segment_frames 4
    assert pair.aligned["source"] == source and pair.aligned["start_timestep"] > 0

    cfg = Run(wan_dense_run[1]).read_config()
    data, stride = cfg.data, cfg.data.stride
    a, b = (written[name][::stride] for name in (pair.a, pair.b))  # each generated frame is written `stride` times
    assert a.shape == b.shape == (data.frames, data.height, data.width, 3)
    # frame 0 of both is the source's frame 0 through the causal VAE (latent frame 0 held clean), the rest differ
    encoders = family_for(cfg.model).load_encoders()
    first = clip_frames(root / "clips" / source, data)[:1]  # (1, H, W, 3)
    round_trip = encoders.decode(encoders.encode_frames(first, torch.device("cpu"))[None])  # (1, H, W, 3)
    assert np.array_equal(a[0], round_trip[0]) and np.array_equal(b[0], round_trip[0])
    assert not np.array_equal(a[1:], b[1:])
    # the category stays valid for Wan, and the tab's timeline cuts the pair where training does
    assert not [p for p in check_category(root, data, WAN) if p.level == "error"]
    assert [(s.start, s.end) for s in pair_segments(ExplicitPair(pair.a, pair.b, segments=pair.segments), data, WAN)] == [(0, 15), (15, 27)]
