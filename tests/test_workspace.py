"""huvi.workspace: category folders the app edits stay valid training input at every step."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import BUNNY, tiny_config

from huvi.category import load_category
from huvi.clip_view import crop_box, training_view
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.pairs import form_pairs
from huvi.synthetic import moving_square
from huvi.video import read_clip, write_clip
from huvi.workspace import (
    DEMO,
    ClipInfo,
    Workspace,
    add_clip,
    check_name,
    clip_info,
    list_clips,
    preference_pairs,
    read_meta,
    remove_clip,
    safe_clip_name,
    safe_name,
    set_prompt,
    set_score,
    summarize,
)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("HUVI_HOME", str(tmp_path / "home" / "data"))
    monkeypatch.delenv("HUVI_RUNS", raising=False)
    workspace = Workspace.from_env()
    workspace.prepare()
    return workspace


@pytest.fixture
def clip_files(tmp_path) -> list[Path]:
    """Four 32-frame clips (two per direction) outside any category, as uploads would be."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    paths = []
    for i, direction in enumerate((1, -1, 1, -1)):
        path = folder / f"My Clip ({i}).mp4"
        write_clip(path, moving_square(direction, seed=50 + i, frames=32, size=32))
        paths.append(path)
    return paths


def test_runs_live_beside_home_and_the_demo_is_copied_in(ws, tmp_path):
    assert ws.categories == (tmp_path / "home" / "data").resolve()
    assert ws.runs == (tmp_path / "home" / "runs").resolve()
    assert ws.list_categories() == ["demo"]
    assert sorted(p.name for p in (ws.categories / "demo" / "clips").iterdir()) == sorted(p.name for p in (DEMO / "clips").iterdir())
    ws.prepare()  # a second start leaves the copy (and any edits to it) alone
    assert ws.list_categories() == ["demo"]


def test_huvi_runs_overrides_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HUVI_HOME", str(tmp_path / "cats"))
    monkeypatch.setenv("HUVI_RUNS", str(tmp_path / "elsewhere"))
    assert Workspace.from_env().runs == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize("name", ["", " ", "../escape", "a/b", ".hidden", "-dash", "x" * 65, "with space", "naïve"])
def test_unsafe_names_are_refused_with_a_suggestion(name):
    with pytest.raises(HuviError, match="use letters, digits, '-' and '_'"):
        check_name(name)


def test_a_refused_name_suggests_a_safe_one():
    with pytest.raises(HuviError, match="e.g. 'horse-running'"):
        check_name("horse running")


@pytest.mark.parametrize(
    "typed, made", [("My Bunny Clips", "My-Bunny-Clips"), ("  horse  running! ", "horse-running"), ("naïve", "naive"), ("-dash_", "dash"), ("x" * 70, "x" * 64)]
)
def test_a_category_name_with_spaces_becomes_a_safe_folder_name(ws, typed, made):
    assert safe_name(typed) == made
    assert ws.create_category(typed, "a bunny").name == made
    assert ws.list_categories() == ["demo", made]


@pytest.mark.parametrize("typed", ["../escape", "a/b", ".hidden", "", "  ", "!!!", "日本"])
def test_a_name_like_a_path_or_without_letters_is_still_refused(typed):
    with pytest.raises(HuviError, match="is not allowed: use letters|has no letter or digit"):
        safe_name(typed)


def test_create_category_writes_valid_json_and_refuses_duplicates(ws):
    root = ws.create_category("guitar", "  a person playing guitar ")
    assert read_meta(root) == {"prompt": "a person playing guitar", "scores": {}}
    assert (root / "clips").is_dir()
    assert ws.list_categories() == ["demo", "guitar"]
    with pytest.raises(HuviError, match="already exists"):
        ws.create_category("guitar", "again")
    with pytest.raises(HuviError, match="prompt"):
        ws.create_category("empty-prompt", "  ")
    assert not (ws.categories / "empty-prompt").exists()


def test_clips_added_and_rated_make_a_trainable_category(ws, clip_files):
    root = ws.create_category("squares", "a square sliding")
    data = tiny_config().data
    names = [add_clip(root, path, score, data) for path, score in zip(clip_files, (5, 1, 4, None))]
    assert names == ["My_Clip_0.mp4", "My_Clip_1.mp4", "My_Clip_2.mp4", "My_Clip_3.mp4"]
    assert [(e.name, e.score) for e in list_clips(root)] == list(zip(names, (5, 1, 4, None)))
    summary = summarize(root)
    assert (summary.clips, summary.rated, summary.pairs, summary.ready) == (4, 3, 3, False)  # 3 rated < 4 needed
    set_score(root, names[3], 2)
    summary = summarize(root)
    assert (summary.rated, summary.pairs, summary.ready) == (4, 6, True)
    assert summary.histogram == {1: 1, 2: 1, 3: 0, 4: 1, 5: 1}
    assert load_category(root).scores == dict(zip(names, (5, 1, 4, 2)))


def test_an_upload_keeps_its_name_and_a_second_one_of_that_name_is_numbered(ws, clip_files, tmp_path):
    root = ws.create_category("squares", "a square")
    first = add_clip(root, clip_files[0], 3, filename="take.MP4")
    other = tmp_path / "other.mp4"
    write_clip(other, moving_square(1, seed=99, frames=32, size=32))
    second = add_clip(root, other, 3, filename="take.mp4")
    assert (first, second) == ("take.mp4", "take_2.mp4")


def test_the_same_file_twice_is_refused(ws, clip_files):
    root = ws.create_category("squares", "a square")
    add_clip(root, clip_files[0], 3)
    with pytest.raises(HuviError, match="already in squares as My_Clip_0.mp4"):
        add_clip(root, clip_files[0], 4, filename="copy.mp4")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.with_suffix(".avi").write_bytes(b"RIFF"), "not a supported clip type"),
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: p.write_text("not a video\n" * 20), "could not be decoded as a video"),
        # 10 frames: long enough at stride 1, which the sentence names with the setting's two spellings
        (
            lambda p: write_clip(p, moving_square(1, seed=7, frames=10, size=32)),
            (
                r"only 4 frames at stride 3, but 8 are needed; use a clip of at least 24 frames, or train with data.stride=1 "
                r"\(`--set data.stride=1`, or that line under the Train tab's Advanced settings\)\.$"
            ),
        ),
        (lambda p: write_clip(p, moving_square(1, seed=7, frames=4, size=32)), r"only 2 frames at stride 3, but 8 are needed; use a clip of at least 24 frames\.$"),
    ],
    ids=["avi", "empty", "text", "too_short", "too_short_at_any_stride"],
)
def test_a_bad_upload_is_refused_and_nothing_is_copied(ws, tmp_path, make, message):
    root = ws.create_category("squares", "a square")
    path = tmp_path / "bad.mp4"
    make(path)
    source = path.with_suffix(".avi") if path.with_suffix(".avi").exists() else path
    with pytest.raises(HuviError, match=message):
        add_clip(root, source, 3, load_config("demo").data)  # 8 frames at stride 3: a smaller stride to name
    assert list((root / "clips").iterdir()) == []
    assert read_meta(root)["scores"] == {}


def test_a_real_clip_decodes_at_the_presets_size(ws):
    root = ws.create_category("bunny", "a rabbit in a meadow")
    assert add_clip(root, BUNNY, 4, tiny_config().data) == "bigbuckbunny.mp4"


def test_each_clip_shows_its_frame_count_and_size_as_stored(ws, clip_files, monkeypatch):
    root = ws.create_category("squares", "a square")
    name = add_clip(root, clip_files[0], 3, tiny_config().data)
    entry = list_clips(root)[0]
    assert entry.info == ClipInfo(32, 32, 32) and str(entry.info) == "32 frames · 32×32"
    assert clip_info(BUNNY) == ClipInfo(132, 1280, 720)  # counted by decoding, the size before any preset resizes it

    import huvi.workspace

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(huvi.workspace, "read_clip", refuse)
    assert clip_info(root / "clips" / name) == ClipInfo(32, 32, 32)  # unchanged file: from the cache
    monkeypatch.undo()
    write_clip(root / "clips" / name, moving_square(1, seed=1, frames=24, size=48))  # replaced: decoded again
    assert clip_info(root / "clips" / name) == ClipInfo(24, 48, 48)

    (root / "clips" / "broken.mp4").write_text("not a video\n" * 20)  # put there by hand
    with pytest.raises(HuviError, match="broken.mp4: could not be decoded as a video"):
        clip_info(root / "clips" / "broken.mp4")


def test_preference_pairs_are_the_trainers_and_say_who_is_left_out(ws, clip_files):
    root = ws.create_category("squares", "a square")
    names = [add_clip(root, path) for path in clip_files]  # unrated at first
    view = preference_pairs(root, seed=0)
    assert (view.pairs, view.unrated, view.ties, view.unpaired) == ([], names, {}, [])
    for name, score in zip(names, (4, 4, 2, None)):
        if score:
            set_score(root, name, score)
    view = preference_pairs(root, seed=5)
    assert [(p.winner, p.loser) for p in view.pairs] == [(p.winner, p.loser) for p in form_pairs({n: s for n, s in zip(names, (4, 4, 2))}, 5)]
    assert {(p.winner_score, p.loser_score) for p in view.pairs} == {(4, 2)}
    assert (view.unrated, view.ties, view.tied_combinations, view.unpaired) == ([names[3]], {4: names[:2]}, 1, [])
    set_score(root, names[2], 3)  # 4, 4, 3 at data.min_rating_gap 2: too close to pair, and said so
    view = preference_pairs(root, seed=5, min_gap=2)
    assert (view.pairs, view.unpaired, view.tied_combinations, view.close, view.min_gap) == ([], names[:3], 1, 2, 2)
    set_score(root, names[3], 5)
    assert summarize(root).ready and summarize(root, min_gap=2).pairs == 1  # 5 against 3; 5-4 and 4-3 are 1 apart
    set_score(root, names[3], 4)
    problems = [p.message for p in summarize(root, min_gap=2).problems]
    assert any(m.startswith(f"No two clips of {root.name} are rated 2 or more apart, so no preference pair forms at data.min_rating_gap 2") for m in problems)
    assert not summarize(root, min_gap=2).ready
    assert summarize(root).ready  # at HuViDPO's 1 the 4-3 pairs form
    set_score(root, names[2], 4)  # all equal: nobody pairs
    view = preference_pairs(root, seed=5)
    assert view.pairs == [] and view.unpaired == names and view.tied_combinations == 6


def test_ratings_are_checked_and_can_be_cleared(ws, clip_files):
    root = ws.create_category("squares", "a square")
    name = add_clip(root, clip_files[0])
    for bad in (0, 6, 2.5, "five", True):
        with pytest.raises(HuviError, match="whole number from 1 to 5"):
            set_score(root, name, bad)
    set_score(root, name, 4.0)  # a number widget sends floats
    assert read_meta(root)["scores"] == {name: 4}
    set_score(root, name, None)
    assert read_meta(root)["scores"] == {}
    for bad in ("missing.mp4", "../category.json", "clips/../" + name):
        with pytest.raises(HuviError, match="is not a clip of squares"):
            set_score(root, bad, 3)
    assert read_meta(root)["scores"] == {}


def test_remove_clip_deletes_the_file_and_its_rating(ws, clip_files):
    root = ws.create_category("squares", "a square")
    name = add_clip(root, clip_files[0], 5)
    remove_clip(root, name)
    assert list((root / "clips").iterdir()) == [] and read_meta(root)["scores"] == {}
    for bad in (name, "../category.json"):
        with pytest.raises(HuviError, match="is not a clip of squares"):
            remove_clip(root, bad)
    assert (root / "category.json").is_file()


def test_set_prompt_keeps_scores(ws):
    root = ws.category_dir("demo")
    scores = read_meta(root)["scores"]
    set_prompt(root, "squares gliding")
    assert read_meta(root) == {"prompt": "squares gliding", "scores": scores}


def test_concurrent_ratings_are_all_kept(ws):
    root = ws.category_dir("demo")
    names = sorted(read_meta(root)["scores"])
    threads = [threading.Thread(target=set_score, args=(root, name, 3)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(read_meta(root)["scores"].values()) == {3}
    assert len(read_meta(root)["scores"]) == len(names)


def test_a_hand_broken_category_json_is_reported_not_overwritten(ws):
    root = ws.create_category("broken", "x")
    (root / "category.json").write_text('{"prompt": ')
    with pytest.raises(HuviError, match="is not valid JSON"):
        set_prompt(root, "y")
    assert (root / "category.json").read_text() == '{"prompt": '


def test_run_names_are_new_and_listed_newest_first(ws):
    first = ws.new_run_name("demo")
    assert first.startswith("demo-")
    (ws.runs / first).mkdir()
    (ws.runs / first / "config.yaml").write_text("seed: 0\n")
    second = ws.new_run_name("demo")
    assert second != first
    (ws.runs / second).mkdir()
    (ws.runs / second / "job.json").write_text(json.dumps({"pid": 1}))
    (ws.runs / "empty").mkdir()
    assert ws.list_runs() == [second, first]


def test_safe_clip_name():
    assert safe_clip_name("/tmp/gradio/abc/Horse Run (2).MOV") == "Horse_Run_2.mov"
    assert safe_clip_name("???.mp4") == "clip.mp4"


# what training sees of a clip ----------------------------------------------------------------------
def test_the_crop_box_is_the_centre_at_the_training_aspect_ratio():
    data = tiny_config().data  # 32x32: square
    assert crop_box(1280, 720, data) == (280, 0, 1000, 720)  # wide: the sides go
    assert crop_box(720, 1280, data) == (0, 280, 720, 1000)  # tall: top and bottom go
    assert crop_box(64, 64, data) == (0, 0, 64, 64)
    wide = load_config("sd15-24gb").data  # 512x320
    assert crop_box(1280, 720, wide) == (64, 0, 1216, 720)  # 1152x720 is 512:320


def test_training_view_shows_the_frames_training_reads(tmp_path):
    data = load_config("demo").data  # 8 frames at stride 3, up to 10 cached, 32x32
    clip = tmp_path / "wide.mp4"
    write_clip(clip, moving_square(1, seed=3, frames=40, size=32).repeat(2, axis=2))  # 64x32: twice as wide
    view = training_view(clip, data)
    assert view.stored == (64, 32) and view.crop == (16, 0, 48, 32)
    assert view.frames.shape == (10, 32, 32, 3) and (view.stride, view.window, view.temporal_crop) == (3, 8, True) and view.enough
    assert np.array_equal(view.frames, read_clip(clip, 32, 32, stride=3, max_frames=10))  # exactly the cached frames
    assert view.first.shape == (32, 64, 3) and tuple(view.first[0, 16]) != tuple(read_clip(clip, None, None, max_frames=1)[0][0, 16])  # outlined
    short = tmp_path / "short.mp4"
    write_clip(short, moving_square(1, seed=3, frames=10, size=32))
    assert not training_view(short, data).enough
