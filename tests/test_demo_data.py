"""The demo model's clips (huvi.demo_data), the first frame drawn in code for a prompt
(generate.first_frame.source: shapes), and preset folders named relative to the repository."""

from __future__ import annotations

import json

import numpy as np
import torch

from huvi.config import load_config
from huvi.demo_data import COLOURS, direction_couples, prompt_frame, shape_clip
from huvi.first_frame import draw_first_frame
from huvi.hub import REPO, local_source
from huvi.track import centroid_track, motion_stats, object_masks
from huvi.video import read_clip


def test_every_clip_moves_its_shape_the_way_its_direction_says():
    for seed in range(40):
        clip = shape_clip(seed)
        stats = motion_stats(clip.frames)
        moved = {"right": stats.dx, "left": -stats.dx, "down": stats.dy, "up": -stats.dy}[clip.direction]
        assert stats.tracked == 1.0 and abs(moved - clip.travel) < 0.05, (seed, clip.direction, stats)
        assert clip.shape in clip.prompt or clip.prompt.startswith("a shape")


def test_a_prompt_s_shape_and_colour_are_drawn_for_the_first_frame():
    frame = prompt_frame("a red circle moving right", seed=3)
    assert frame.shape == (32, 32, 3)
    assert np.array_equal(frame, shape_clip(3, frames=1, shape="disc", colour="red", direction="right", centred=True).frames[0])  # circle -> disc
    red = np.all(np.abs(frame / 255 - COLOURS["red"]) < 0.02, axis=-1)
    assert 0.03 < red.mean() < 0.15  # one disc of 22-36% of the side
    assert not np.array_equal(prompt_frame("a shape moving", 3), prompt_frame("a shape moving", 4))


def test_a_centred_shape_starts_in_the_middle_with_room_to_move_either_way():
    for seed in range(20):
        right, left = (shape_clip(seed, direction=side, centred=True) for side in ("right", "left"))
        assert np.array_equal(right.frames[0], left.frames[0])  # the first frame gives no direction away
        x0 = centroid_track(object_masks(right.frames[:1]))[0][0, 0]
        assert abs(x0 - 16) < 1.5, (seed, x0)  # a triangle's centroid sits a little off its box's centre
        for clip, sign in ((right, 1), (left, -1)):
            stats = motion_stats(clip.frames)
            assert stats.tracked == 1.0 and abs(sign * stats.dx - clip.travel) < 0.05, (seed, clip.direction, stats)
            assert clip.travel <= 0.39


def test_the_shapes_first_frame_source_fits_the_video_size():
    cfg = load_config("tiny", ["generate.first_frame.source=shapes", "data.width=48", "data.height=32"])
    frame = draw_first_frame(cfg, "a blue square", 1, torch.device("cpu"), torch.float32)
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8


def test_a_relative_folder_is_the_repository_s_when_it_is_not_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_source("presets") == str(REPO / "presets")
    (tmp_path / "presets").mkdir()
    assert local_source("presets") == "presets"  # one under the working directory wins
    assert local_source("stable-diffusion-v1-5/stable-diffusion-v1-5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # a Hub id


def test_direction_couples_differ_only_in_direction(tmp_path):
    root = direction_couples(tmp_path / "shapes", clips=4, seed=2, frames=12)
    scores = json.loads((root / "category.json").read_text())["scores"]
    names = sorted(scores)
    for k in (0, 1):  # couple k: clip 2k moves right and is rated high, clip 2k+1 the same shape moving left
        right, left = (shape_clip(2000 + k, 12, direction=side) for side in ("right", "left"))
        assert (right.shape, right.colour, right.travel) == (left.shape, left.colour, left.travel)
        moved = [motion_stats(read_clip(root / "clips" / names[2 * k + j], 32, 32)).dx for j in (0, 1)]
        assert moved[0] > 0.1 and moved[1] < -0.1, moved
        assert scores[names[2 * k]] >= 4 and scores[names[2 * k + 1]] <= 2
