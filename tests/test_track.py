"""The generated-sample metric's measurement: the main object's centroid track, read back from
written clips, tells each toy preference's two motions apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from huvi.synthetic import PREFERENCES, moving_square
from huvi.track import motion_stats, object_kept, shows_preference
from huvi.video import read_clip, write_clip


@pytest.mark.parametrize("preference", list(PREFERENCES))
def test_each_preferences_two_motions_are_told_apart_after_an_mp4_round_trip(preference, tmp_path):
    preferred, other = PREFERENCES[preference]
    for seed in range(6):
        for motion, expected in ((preferred, True), (other, False)):
            path = tmp_path / f"{seed}.mp4"
            write_clip(path, moving_square(seed=seed, frames=16, size=32, **({"direction": 1} | motion)))
            stats = motion_stats(read_clip(path, None, None))
            assert stats.tracked == 1.0
            assert shows_preference(preference, stats) is expected, (seed, motion, stats)


def test_the_track_measures_displacement_growth_and_shake():
    right = motion_stats(moving_square(direction=1, seed=0, frames=32, size=64))
    left = motion_stats(moving_square(direction=-1, seed=0, frames=32, size=64))
    assert right.dx == pytest.approx(-left.dx) and right.dx > 0.4 and abs(right.dy) < 0.01
    assert right.growth == pytest.approx(1.0, abs=0.02) and right.shake < 0.05
    assert motion_stats(moving_square(direction=1, seed=0, frames=32, size=64, growth=0.8)).growth == pytest.approx(1.8, abs=0.1)
    assert motion_stats(moving_square(direction=1, seed=0, frames=32, size=64, jitter=0.25)).shake > 0.2


def test_a_clip_without_an_object_shows_no_preference():
    flat = np.full((8, 32, 32, 3), 90, dtype=np.uint8)
    stats = motion_stats(flat)
    assert stats.tracked == 0.0 and math.isnan(stats.dx)
    assert not any(shows_preference(p, stats) for p in PREFERENCES)
    with pytest.raises(ValueError, match="unknown preference"):
        shows_preference("speed", stats)


def test_an_object_is_kept_through_real_motion_but_not_through_colour_noise():
    """What an untrained model generates from a clean first frame (colour noise after it) has pixels
    near the object's colour in every frame, so it is "tracked" in every frame; object_kept tells it
    from a shape that moves, grows or shrinks."""
    for motion in ({}, {"growth": 0.8}, {"growth": -0.45}, {"jitter": 0.25}):
        assert object_kept(moving_square(direction=1, seed=3, frames=16, size=32, **motion)), motion
    clip = moving_square(direction=1, seed=3, frames=16, size=32)
    noisy = clip.copy()
    noisy[1:] = np.random.default_rng(0).integers(0, 256, noisy[1:].shape, dtype=np.uint8)
    assert motion_stats(noisy).tracked == 1.0 and not object_kept(noisy)
    vanished = clip.copy()
    vanished[5:] = vanished[0, 0, 0]  # the background's colour from frame 5 on
    assert not object_kept(vanished)
    assert not object_kept(moving_square(direction=1, seed=3, frames=16, size=32, growth=0.8), side_change=1.5)
