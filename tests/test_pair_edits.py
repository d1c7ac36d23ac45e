"""A category's explicit pairs in category.json (huvi.category, huvi.pair_edits): bad entries
named, frame counts checked, edits that keep the rest of the file, segment labels, the pair
preview, and pairs that make a category trainable on their own."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import clip_names, read_meta, tiny_config, with_pairs, write_meta

from huvi.category import check_category, load_category, read_pairs
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.pair_edits import add_pair, label_pair, label_segment, remove_pair
from huvi.pair_view import ACTIVE, GAP, IDLE, OUTSIDE, PLAYHEAD, STRIP, pair_preview, pair_segments, preview_path, timeline_strips
from huvi.pairs import ExplicitPair
from huvi.trainer import train
from huvi.video import read_clip
from huvi.workspace import remove_clip


# checked --------------------------------------------------------------------------------------
def _bad_pair_cases(names):
    a, b = names[0], names[1]
    return [
        ({"a": a, "b": "gone.mp4", "winner": "a"}, f"pair 1 ({a} vs gone.mp4): gone.mp4 is not found"),
        ({"a": a, "b": b, "segments": ["a", "better"]}, f"pair 1 ({a} vs {b}): segment 2 label 'better' is unknown"),
        ({"a": a, "b": b, "winner": "first"}, "winner 'first' is unknown"),
        ({"a": a, "b": a, "winner": "a"}, "cannot be paired with itself"),
        ({"a": a, "b": b, "segment": ["a"]}, "unknown key 'segment'"),
        ({"a": a, "winner": "a"}, "pair 1 needs the file names of its two clips"),
        ({"a": a, "b": b, "segments": []}, "must be a list with one label per segment"),
        ({"a": a, "b": b, "segments": ["a", "b", "tie", "a", "b"]}, f"pair {a} vs {b}: 5 segment labels do not divide the 24 training frames"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_pairs_name_the_pair_and_the_problem(category_copy, case, capsys):
    entry, message = _bad_pair_cases(clip_names(category_copy))[case]
    with_pairs(category_copy, [entry])
    assert main(["check", "--category", str(category_copy), "--preset", "tiny"]) == EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_frame_counts_of_a_segment_pair_must_match(category_copy, tmp_path):
    a, b = clip_names(category_copy)[:2]
    frames = read_clip(category_copy / "clips" / b, None, None)
    from huvi.video import write_clip

    write_clip(category_copy / "clips" / b, frames[:25])  # 25 frames at stride 1: 25 kept, not 26
    with_pairs(category_copy, [{"a": a, "b": b, "segments": ["a", "b"]}])
    errors = [p.message for p in check_category(category_copy, tiny_config().data) if p.level == "error"]
    assert errors == [f"pair {a} vs {b}: frame counts differ (26 and 25 at stride 1); the clips of a segment-labelled pair must be equally long, as dense-pairs makes them."]
    with pytest.raises(HuviError, match="frame counts differ"):
        train(load_config("tiny", ["dpo.mode=dense"]), category_copy, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_editing_pairs_keeps_the_rest_of_the_file(category_copy):
    a, b, c = clip_names(category_copy)[:3]
    before = read_meta(category_copy)
    add_pair(category_copy, ExplicitPair(a, b, segments=(None, None)))
    add_pair(category_copy, ExplicitPair(a, c, winner="b"))
    with pytest.raises(HuviError, match="already a pair"):
        add_pair(category_copy, ExplicitPair(b, a))
    with pytest.raises(HuviError, match="not found"):
        add_pair(category_copy, ExplicitPair(a, "missing.mp4"))
    assert [p.labelled for p in read_pairs(category_copy)] == [False, True]
    assert "has no label yet" in " ".join(p.message for p in check_category(category_copy))  # a warning, not an error
    assert load_category(category_copy).pairs[0] == ExplicitPair(a, b, segments=(None, None))

    labelled = label_pair(category_copy, a, b, segments=["a", "tie"])
    assert labelled == ExplicitPair(a, b, segments=("a", "tie"))
    with pytest.raises(HuviError, match="has 2 segments; give 2 labels"):
        label_pair(category_copy, a, b, segments=["a", "b", "a", "b"])
    with pytest.raises(HuviError, match="label 'x' is unknown"):
        label_pair(category_copy, a, b, segments=["a", "x"])
    with pytest.raises(HuviError, match="no pair"):
        label_pair(category_copy, b, a, segments=["a", "b"])
    meta = read_meta(category_copy)
    assert meta["scores"] == before["scores"] and meta["prompt"] == before["prompt"]
    assert meta["pairs"] == [{"a": a, "b": b, "segments": ["a", "tie"]}, {"a": a, "b": c, "winner": "b"}]
    remove_pair(category_copy, a, c)
    assert read_pairs(category_copy) == [labelled]


def test_labelling_one_segment_and_removing_a_clip(category_copy):
    a, b, c = clip_names(category_copy)[:3]
    with_pairs(category_copy, [{"a": a, "b": b, "segments": [None, None, None, None]}, {"a": b, "b": c}])
    assert label_segment(category_copy, a, b, 2, "b").segments == (None, None, "b", None)
    assert label_segment(category_copy, a, b, 0, "tie").segments == ("tie", None, "b", None)  # the others stay
    assert label_segment(category_copy, a, b, 2, None).segments == ("tie", None, None, None)
    assert label_segment(category_copy, b, c, 0, "a").winner == "a"  # a clip-level pair: one "segment"
    with pytest.raises(HuviError, match="has 4 segments; there is no segment 5"):
        label_segment(category_copy, a, b, 4, "a")
    with pytest.raises(HuviError, match="labelled as a whole clip; there is no segment 2"):
        label_segment(category_copy, b, c, 1, "a")
    with pytest.raises(HuviError, match="label 'first' is unknown"):
        label_segment(category_copy, a, b, 1, "first")

    remove_clip(category_copy, a)  # its rating and every pair naming it go with it
    meta = read_meta(category_copy)
    assert a not in meta["scores"] and meta["pairs"] == [{"a": b, "b": c, "winner": "a"}]
    assert not [p for p in check_category(category_copy) if p.level == "error"]


def test_pair_preview_plays_both_clips_over_the_segment_timeline(category_copy):
    a, b = clip_names(category_copy)[:2]
    data = tiny_config().data  # 24 frames at stride 1: the window is the first 24 of 32 frames
    pair = ExplicitPair(a, b, segments=("a", None, "tie", "b"))
    segments = pair_segments(pair, data)
    assert [(s.start, s.end, s.label) for s in segments] == [(0, 6, "a"), (6, 12, None), (12, 18, "tie"), (18, 24, "b")]
    assert [(s.start, s.end, s.label) for s in pair_segments(ExplicitPair(a, b, winner="b"), data)] == [(0, 24, "b")]

    strips = timeline_strips(segments, 32, 320)  # 10 px per frame, 60 px per segment
    assert strips.shape == (32, STRIP, 320, 3)
    for t, lit in ((0, 0), (7, 1), (17, 2), (23, 3), (24, None), (31, None)):
        colours = [tuple(strips[t, 2, 60 * k + 30]) for k in range(4)]  # above each number, away from the playhead
        assert colours == [ACTIVE if k == lit else IDLE for k in range(4)], (t, colours)
        assert tuple(strips[t, 2, 300]) == OUTSIDE  # frames past the window: never trained
        head = round((t + 0.5) * 10)
        assert (strips[t, :, head] == PLAYHEAD).all()

    video = pair_preview(category_copy, pair, data, height=64)
    assert video == preview_path(category_copy, pair, data) and video.parent == category_copy / ".huvi" / "pairs"
    frames = read_clip(video, None, None)
    assert frames.shape == (32, 64 + STRIP, 2 * 64 + GAP, 3)  # the 32x32 clips at 64 px, side by side, timeline below
    left = read_clip(category_copy / "clips" / a, 64, 64)
    assert np.abs(frames[:, :64, :64].astype(float) - left).mean() < 12  # H.264 of the same frames, in order
    mtime = video.stat().st_mtime_ns
    assert pair_preview(category_copy, pair, data, height=64).stat().st_mtime_ns == mtime  # reused while the clips are unchanged
    assert load_category(category_copy).clips  # the preview folder is not taken for clips


def test_pairs_alone_make_a_category_trainable(category_copy):
    """With every rating equal there is no rating pair, but a labelled explicit pair is enough."""
    meta = read_meta(category_copy)
    meta["scores"] = {name: 3 for name in meta["scores"]}
    write_meta(category_copy, meta)
    assert any("same score" in p.message for p in check_category(category_copy))
    a, b = sorted(meta["scores"])[:2]
    with_pairs(category_copy, [{"a": a, "b": b, "winner": "a"}])
    assert not [p for p in check_category(category_copy) if p.level == "error"]


def test_ratings_too_close_for_the_rating_gap_say_what_to_do(category_copy, tmp_path):
    """data.min_rating_gap 2 (tiny's) with every clip rated 4 or 5: no pair forms; the check and the
    trainer say so in one sentence, and a labelled explicit pair is still enough."""
    meta = read_meta(category_copy)
    meta["scores"] = {name: 4 + i % 2 for i, name in enumerate(sorted(meta["scores"]))}
    write_meta(category_copy, meta)
    cfg = load_config("tiny", ["data.min_rating_gap=2"])
    errors = [p.message for p in check_category(category_copy, cfg.data) if p.level == "error"]
    assert errors == [(
        f"No two clips of {category_copy.name} are rated 2 or more apart, so no preference pair forms at data.min_rating_gap 2; "
        "rate the best and the worst clips further apart, or set data.min_rating_gap to 1."
    )]  # fmt: skip
    assert not [p for p in check_category(category_copy, load_config("tiny", ["data.min_rating_gap=1"]).data) if p.level == "error"]  # at 1 the 5-4 pairs form
    with pytest.raises(HuviError, match=r"No preference pairs to train on in clip mode; give at least two clips ratings 2 or more apart \(data.min_rating_gap\)"):
        train(cfg, category_copy, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
    a, b = sorted(meta["scores"])[:2]
    with_pairs(category_copy, [{"a": a, "b": b, "winner": "a"}])
    assert not [p for p in check_category(category_copy, cfg.data) if p.level == "error"]
