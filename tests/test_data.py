"""Clips (decode, stride, resize + centre crop, write), category validation and the latent cache."""

from __future__ import annotations

import json
import logging

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import BUNNY, keep_clips, read_meta, tiny_config, write_meta
from huvi.cache import cache_category, cache_dir
from huvi.category import check_category, clip_frames, load_category
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.families.sd15.models import load_encoders
from huvi.pairs import form_pairs
from huvi.synthetic import blind_ratings, defect_category, moving_square, preference_category, shuffled_labels, shuffled_ratings
from huvi.video import read_clip, write_clip

BUNNY_FRAMES, BUNNY_W, BUNNY_H = 132, 1280, 720


# decoding the real fixture ---------------------------------------------------------------------
def test_reads_every_frame_at_the_asked_size():
    frames = read_clip(BUNNY, 64, 40)
    assert frames.shape == (BUNNY_FRAMES, 40, 64, 3)
    assert frames.dtype == np.uint8
    assert 40 < frames.mean() < 200  # real picture content, not black frames


def test_stride_keeps_every_nth_frame():
    every = read_clip(BUNNY, 64, 40, stride=1, max_frames=13)
    third = read_clip(BUNNY, 64, 40, stride=3, max_frames=5)
    np.testing.assert_array_equal(third, every[[0, 3, 6, 9, 12]])
    assert read_clip(BUNNY, 16, 16, stride=4).shape[0] == 33  # ceil(132 / 4)
    assert read_clip(BUNNY, 16, 16, stride=200).shape[0] == 1


def test_max_frames_stops_early():
    assert read_clip(BUNNY, 64, 40, max_frames=10).shape == (10, 40, 64, 3)
    assert read_clip(BUNNY, 64, 40, stride=2, max_frames=100).shape[0] == 66  # fewer available than asked


def _crop_then_resize(src: np.ndarray, x0: int, width: int, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(src[:, x0 : x0 + width]).resize(size, Image.Resampling.BICUBIC)).astype(float)


@pytest.mark.parametrize(
    "size, crop_width",
    [
        ((512, 320), 1152),  # landscape 1.6: 720 * 1.6 = 1152 of the 1280 source columns
        ((320, 512), 450),  # portrait 0.625: 720 * 0.625 = 450 columns
    ],
)
def test_resize_and_centre_crop(size, crop_width):
    width, height = size
    frames = read_clip(BUNNY, width, height, stride=60, max_frames=2)  # source frames 0 and 60
    assert frames.shape == (2, height, width, 3)
    got = frames[1].astype(float)
    src = iio.imread(BUNNY, index=60)
    assert src.shape == (BUNNY_H, BUNNY_W, 3)
    centre = _crop_then_resize(src, (BUNNY_W - crop_width) // 2, crop_width, size)
    left = _crop_then_resize(src, 0, crop_width, size)
    squashed = np.asarray(Image.fromarray(src).resize(size, Image.Resampling.BICUBIC)).astype(float)
    assert np.abs(got - centre).mean() < 0.5
    assert np.abs(got - left).mean() > 10  # a crop off centre would be far away
    assert np.abs(got - squashed).mean() > 10  # and so would a resize without crop


# writing and reading back ----------------------------------------------------------------------
def sliding_bar(frames: int = 12, size: int = 48) -> np.ndarray:
    """(frames, size, size, 3): an orange bar moving 3 px per frame under a blue band."""
    out = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        out[i, :, 3 * i + 4 : 3 * i + 10] = (255, 200, 40)
    out[:, :8] = (30, 60, 200)
    return out


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_read_round_trip(tmp_path, suffix):
    frames = sliding_bar()
    path = tmp_path / f"clip{suffix}"
    write_clip(path, frames)
    back = read_clip(path, 48, 48).astype(float)
    assert back.shape == frames.shape
    err = np.abs(back - frames).mean(axis=(1, 2, 3))  # per frame
    shifted = np.abs(back[1:] - frames[:-1]).mean(axis=(1, 2, 3))
    assert err.max() < 5  # lossy (H.264, GIF palette), but close
    assert shifted.min() > 3 * err.max()  # every frame in its place: far from its neighbour


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_keeps_sizes_that_are_not_multiples_of_16(tmp_path, suffix):
    frames = np.ascontiguousarray(moving_square(-1, seed=4, frames=9, size=48)[:, :24, :40])  # (9, 24, 40, 3)
    path = tmp_path / f"clip{suffix}"
    write_clip(path, frames)
    raw = list(iio.imiter(path))
    assert len(raw) == 9
    assert raw[0].shape[:2] == (24, 40)


def test_reading_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(HuviError, match="nothere.mp4: file not found"):
        read_clip(tmp_path / "nothere.mp4", 32, 32)


# category validation -----------------------------------------------------------------------------
def test_good_category_loads(category):
    cat = load_category(category)
    assert cat.prompt == "a square sliding across the frame"
    assert len(cat.clips) == 6
    assert cat.scores == read_meta(category)["scores"]
    assert all(c.path.is_file() and c.path.parent.name == "clips" for c in cat.clips)
    problems = check_category(category, tiny_config().data)
    assert [p.level for p in problems] == ["warning"]  # only: 6 clips is outside 8-16
    assert "6 rated clips" in problems[0].message


def test_each_bad_category_is_reported_with_its_problem(bad_category):
    data = tiny_config().data
    problems = check_category(bad_category.root, data)
    errors = [p.message for p in problems if p.level == "error"]
    assert len(errors) == 1, errors
    assert bad_category.message in errors[0]
    if bad_category.decoding:
        # structure is fine: loading succeeds, only decoding the clip finds it
        assert not [p for p in check_category(bad_category.root) if p.level == "error"]
        broken = sorted(load_category(bad_category.root).scores)[0]  # the clip the case broke
        with pytest.raises(HuviError) as info:
            clip_frames(bad_category.root / "clips" / broken, data)
        assert str(info.value).startswith(f"{broken}: ")
        assert bad_category.message in str(info.value)
    else:
        with pytest.raises(HuviError) as info:
            load_category(bad_category.root)
        assert bad_category.message in str(info.value)
        assert "\n" not in str(info.value)


def test_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(HuviError, match="is not a folder"):
        load_category(tmp_path / "nope")


def test_five_clips_is_a_warning_not_an_error(category_copy, caplog):
    keep_clips(category_copy, 5)
    problems = check_category(category_copy, tiny_config().data)
    assert [p.level for p in problems] == ["warning"]
    assert "5 rated clips" in problems[0].message and "8-16" in problems[0].message
    with caplog.at_level(logging.WARNING, logger="huvi"):
        cat = load_category(category_copy)
    assert len(cat.clips) == 5
    assert "5 rated clips" in caplog.text


def test_an_unrated_file_is_a_warning_and_is_not_used(category_copy):
    meta = read_meta(category_copy)
    unrated = sorted(meta["scores"])[0]
    del meta["scores"][unrated]
    write_meta(category_copy, meta)
    (category_copy / "clips" / "notes.txt").write_text("not a clip")
    problems = check_category(category_copy, tiny_config().data)
    assert all(p.level == "warning" for p in problems)
    unrated_warnings = [p.message for p in problems if "has no score" in p.message]
    assert len(unrated_warnings) == 2
    assert any(m.startswith(unrated) for m in unrated_warnings)
    assert unrated not in load_category(category_copy).scores


def test_prompt_is_required(category_copy):
    meta = read_meta(category_copy)
    meta["prompt"] = "  "
    write_meta(category_copy, meta)
    with pytest.raises(HuviError, match="prompt"):
        load_category(category_copy)


def test_several_errors_point_to_check(category_copy):
    meta = read_meta(category_copy)
    first, second = sorted(meta["scores"])[:2]
    meta["scores"][first] = 0
    meta["scores"][second] = 9
    write_meta(category_copy, meta)
    with pytest.raises(HuviError, match=r"1 more problems: run `python -m huvi check"):
        load_category(category_copy)
    assert len([p for p in check_category(category_copy) if p.level == "error"]) == 2


# latent cache ------------------------------------------------------------------------------------
class CountingLoader:
    def __init__(self, cfg) -> None:
        self.cfg, self.calls = cfg, 0

    def __call__(self):
        self.calls += 1
        return load_encoders(self.cfg.model)


def _must_not_load():
    raise AssertionError("the encoders were loaded although every entry was cached")


def test_latent_cache_writes_reuses_and_rebuilds(category, tmp_path, monkeypatch):
    monkeypatch.setenv("HUVI_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    cfg = tiny_config()
    cat = load_category(category)
    cpu = torch.device("cpu")

    loader = CountingLoader(cfg)
    first = cache_category(cat, cfg, loader, cpu, show_progress=False)
    assert loader.calls == 1
    entries = sorted((tmp_path / "cache" / "latents").glob("*.safetensors"))
    assert len(entries) == 6
    assert len(list((tmp_path / "cache" / "prompts").glob("*.safetensors"))) == 1
    assert set(first.clips) == set(cat.scores)
    d = cfg.data
    for clip in first.clips.values():
        # (c, f, h, w): max_cached_frames strided frames, 2x downsampled by the tiny VAE
        assert clip.latents.shape == (4, d.max_cached_frames, d.height // 2, d.width // 2)
        assert clip.flipped.shape == clip.latents.shape
        assert not torch.equal(clip.latents, clip.flipped)
        assert torch.isfinite(clip.latents).all()
    assert first.prompt_embeds.shape == (77, 32)  # (tokens, dim) of the tiny text encoder

    second = cache_category(cat, cfg, _must_not_load, cpu, show_progress=False)
    for name, clip in first.clips.items():
        assert torch.equal(second.clips[name].latents, clip.latents)
        assert torch.equal(second.clips[name].flipped, clip.flipped)
    assert torch.equal(second.prompt_embeds, first.prompt_embeds)

    broken = entries[0]
    broken.write_bytes(b"not a safetensors file")
    loader = CountingLoader(cfg)
    third = cache_category(cat, cfg, loader, cpu, show_progress=False)
    assert loader.calls == 1  # loaded again, for the one broken entry
    assert broken.stat().st_size > 1000  # rewritten as a real entry
    for name, clip in first.clips.items():
        torch.testing.assert_close(third.clips[name].latents, clip.latents, rtol=0, atol=1e-6)
    cache_category(cat, cfg, _must_not_load, cpu, show_progress=False)  # and whole again


def test_cache_key_follows_content_and_settings(category_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HUVI_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config()
    cpu = torch.device("cpu")
    cache_category(load_category(category_copy), cfg, CountingLoader(cfg), cpu, show_progress=False)

    name = sorted(read_meta(category_copy)["scores"])[0]
    write_clip(category_copy / "clips" / name, moving_square(1, seed=99, frames=32, size=32))  # new content
    loader = CountingLoader(cfg)
    cache_category(load_category(category_copy), cfg, loader, cpu, show_progress=False)
    assert loader.calls == 1
    assert len(list((tmp_path / "cache" / "latents").glob("*.safetensors"))) == 7

    other = load_config("tiny", {"data": {"frames": 8, "stride": 3, "max_cached_frames": 10}})  # other frames -> other entries
    loader = CountingLoader(other)
    cache_category(load_category(category_copy), other, loader, cpu, show_progress=False)
    assert loader.calls == 1
    assert len(list((tmp_path / "cache" / "latents").glob("*.safetensors"))) == 13


def test_cache_reports_a_bad_clip(category_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HUVI_CACHE", str(tmp_path / "cache"))
    name = sorted(read_meta(category_copy)["scores"])[0]
    (category_copy / "clips" / name).write_bytes(b"")
    cfg = tiny_config()
    with pytest.raises(HuviError, match=f"{name}: the file is empty"):
        cache_category(load_category(category_copy), cfg, CountingLoader(cfg), torch.device("cpu"), show_progress=False)


def test_category_json_is_read_as_utf8(category_copy):
    meta = read_meta(category_copy)
    meta["prompt"] = "un carré qui glisse"
    (category_copy / "category.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    assert load_category(category_copy).prompt == "un carré qui glisse"


@pytest.mark.parametrize("preference", ["direction", "growth", "smoothness"])
def test_a_preference_category_s_couples_differ_only_in_the_preference(tmp_path, preference):
    """Clips 2k and 2k+1 are the same square on the same background (their first frames differ only
    where the square is: shaken, started from the other side, or not yet grown), and the ratings
    follow the preference."""
    root = preference_category(tmp_path, preference, clips=4, seed=3, frames=8, size=32)
    meta = json.loads((root / "category.json").read_text())
    names = sorted(meta["scores"])
    clips = [read_clip(root / "clips" / n, 32, 32).astype(int) for n in names]  # (8, 32, 32, 3) each
    assert [meta["scores"][n] >= 4 for n in names] == [True, False, True, False]
    across = np.abs(clips[0][0] - clips[2][0]).mean()  # two couples' first frames
    for k in (0, 2):
        a, b = clips[k], clips[k + 1]
        assert np.abs(a[0] - b[0]).mean() < across / 2
        assert np.abs(a - b).mean() > 0.5  # the preference shows


def test_the_shuffled_control_lets_the_preferred_clips_win_as_many_pairs_as_they_lose(tmp_path):
    root = preference_category(tmp_path, "growth", clips=12, seed=5, frames=4, size=16)
    shuffled_ratings(root, seed=5)
    scores = json.loads((root / "category.json").read_text())["scores"]
    names = sorted(scores)
    preferred, others = names[0::2], names[1::2]
    assert sorted(scores[n] for n in preferred) == sorted(scores[n] for n in others)
    assert sum(scores[n] >= 4 for n in preferred) == 3
    wins = [1 if p.winner in preferred else -1 for p in form_pairs(scores, 0) if (p.winner in preferred) != (p.loser in preferred)]
    assert wins and sum(wins) == 0


def test_the_blind_control_rates_both_clips_of_a_couple_alike_so_no_square_has_a_preferred_side(tmp_path):
    root = preference_category(tmp_path, "direction", clips=12, seed=5, frames=4, size=16)
    given = json.loads((root / "category.json").read_text())["scores"]
    blind_ratings(root, seed=5)
    scores = json.loads((root / "category.json").read_text())["scores"]
    names = sorted(scores)
    preferred, others = names[0::2], names[1::2]
    assert all(scores[p] == scores[o] for p, o in zip(preferred, others))
    assert sum(scores[n] >= 4 for n in preferred) == 3 and set(scores.values()) <= set(given.values())
    pairs = form_pairs(scores, 0)
    for p, o in zip(preferred, others):  # each side of a square wins and loses against the same clips
        assert sorted(x.loser for x in pairs if x.winner == p) == sorted(x.loser for x in pairs if x.winner == o)
        assert sorted(x.winner for x in pairs if x.loser == p) == sorted(x.winner for x in pairs if x.loser == o)
    wins = [1 if x.winner in preferred else -1 for x in pairs if (x.winner in preferred) != (x.loser in preferred)]
    assert len(pairs) >= 36 and wins and sum(wins) == 0  # as many pairs as the rated category's high-against-low


def test_a_smear_is_local_and_the_shuffled_labels_name_the_clean_clip_half_the_time(tmp_path):
    root = defect_category(tmp_path, "smear", pairs=8, seed=3, frames=8, stride=2, size=32)
    true = json.loads((root / "category.json").read_text())["pairs"]
    pair = true[0]
    spoilt, clean = (pair["a"], pair["b"]) if pair["winner"] == "b" else (pair["b"], pair["a"])
    changed = np.abs(read_clip(root / "clips" / spoilt, None, None).astype(int) - read_clip(root / "clips" / clean, None, None).astype(int)).max(-1) > 16
    assert 0 < changed.mean() < 0.05  # a few frames, and in them the square's neighbourhood only
    assert changed[0].sum() == 0  # frame 0 is never touched
    shuffled_labels(root, seed=3)
    shuffled = json.loads((root / "category.json").read_text())["pairs"]
    kept = [a == b for t, s in zip(true, shuffled) for a, b in zip(t["segments"], s["segments"]) if a != "tie"]
    assert len(kept) >= 4 and sum(kept) == len(kept) - len(kept) // 2
    winners = [t["winner"] == s["winner"] for t, s in zip(true, shuffled) if t["winner"] != "tie"]
    assert sum(winners) == len(winners) - len(winners) // 2
    assert all(s["segments"].count("tie") == t["segments"].count("tie") for t, s in zip(true, shuffled))


def test_variation_makes_a_pair_s_copies_differ_everywhere_a_little_and_keeps_the_labels(tmp_path):
    plain = defect_category(tmp_path / "plain", "smear", pairs=4, seed=3, frames=8, stride=2, size=32)
    varied = defect_category(tmp_path / "varied", "smear", pairs=4, seed=3, frames=8, stride=2, size=32, variation=8.0)
    meta = json.loads((varied / "category.json").read_text())
    assert meta == json.loads((plain / "category.json").read_text())  # the same defects drawn, the same labels
    pair = meta["pairs"][0]
    a, b = (read_clip(varied / "clips" / pair[side], None, None).astype(int) for side in "ab")
    differ = np.abs(a[0] - b[0]).max(-1)  # frame 0: no defect on either copy
    assert (differ > 2).mean() > 0.5 and differ.mean() < 16  # nearly everywhere, by a few grey levels
    same = read_clip(plain / "clips" / pair["a"], None, None).astype(int)
    assert np.abs(a - same).mean() < 10  # the same clip underneath
