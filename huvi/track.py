"""How the main object of a clip moves, measured from its pixels: the centroid track behind the
generated-sample metric (does a clip show the preferred motion?).

The object is the colour that stands out of the first frame (the frame a first-frame-conditioned
clip is given); each frame's object mask is the pixels near that colour. From the masks come a
centroid track and an area per frame; from those, straight-line fits give the net displacement,
the growth of the object's side and how far the track shakes off its straight path. It is made
for one uniformly coloured object on a background of other colours, as in huvi.synthetic's clips
and what the demo model generates, not for real footage.

The toy preferences of huvi.synthetic each read one of these: direction (net horizontal
displacement), growth (side ratio) and smoothness (the shake).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

MIN_OBJECT_SHARE = 0.002  # a mask smaller than this share of the frame is no object (an empty frame)


@dataclass(frozen=True)
class MotionStats:
    """The main object's motion over a clip; nan where no object was found in enough frames."""

    dx: float  # net horizontal displacement, first to last frame, in frame widths (> 0: rightwards)
    dy: float  # net vertical displacement, in frame heights (> 0: downwards)
    growth: float  # the object's side at the last frame over its side at the first (fitted lines)
    shake: float  # RMS distance of the centroid from its straight path, in object sides
    tracked: float  # share of frames in which an object was found

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def object_masks(frames: np.ndarray, share: float = 0.01) -> np.ndarray:
    """(f, h, w) bool: the pixels of each frame that have the main object's colour.

    frames: (f, h, w, 3) uint8 or floats in [0, 1]. The object's colour is read off the first frame
    (the one a first-frame-conditioned clip is given): the mean of the `share` of its pixels farthest
    from the frame's median colour, which is the background's. A pixel of any frame belongs to the
    object when it is nearer that colour than half the object's distance from the background."""
    x = frames.astype(np.float32) / (255.0 if frames.dtype == np.uint8 else 1.0)  # (f, h, w, 3)
    first = x[0].reshape(-1, 3)  # (h w, 3)
    background = np.median(first, axis=0)  # (3,)
    far = np.linalg.norm(first - background, axis=1)  # (h w,)
    count = max(1, int(share * len(first)))
    colour = first[np.argsort(far)[-count:]].mean(axis=0)  # (3,)
    contrast = np.linalg.norm(colour - background)
    if contrast < 0.08:  # nothing stands out of the first frame
        return np.zeros(x.shape[:3], dtype=bool)
    return np.linalg.norm(x - colour, axis=-1) < contrast / 2  # (f, h, w)


def centroid_track(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (f, 2) as (x, y) in pixels and areas (f,) in pixels of each frame's mask; nan
    centroids where a mask is smaller than MIN_OBJECT_SHARE of the frame."""
    f, h, w = masks.shape
    area = masks.reshape(f, -1).sum(axis=1).astype(np.float64)  # (f,)
    ys, xs = np.mgrid[0:h, 0:w]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * xs).reshape(f, -1).sum(axis=1) / area
        cy = (masks * ys).reshape(f, -1).sum(axis=1) / area
    track = np.stack([cx, cy], axis=1)  # (f, 2)
    track[area < MIN_OBJECT_SHARE * h * w] = np.nan
    return track, area


def motion_stats(frames: np.ndarray) -> MotionStats:
    """The main object's motion in a clip of (f, h, w, 3) frames (see the module docstring)."""
    f, h, w = frames.shape[:3]
    track, area = centroid_track(object_masks(frames))
    seen = ~np.isnan(track[:, 0])
    if seen.sum() < max(3, f // 2):
        return MotionStats(math.nan, math.nan, math.nan, math.nan, float(seen.mean()))
    t = np.arange(f, dtype=np.float64)
    fit_x = np.polyfit(t[seen], track[seen, 0], 1)  # (slope, intercept)
    fit_y = np.polyfit(t[seen], track[seen, 1], 1)
    side = np.sqrt(area)  # (f,)
    fit_side = np.polyfit(t[seen], side[seen], 1)
    first_side, last_side = np.polyval(fit_side, 0), np.polyval(fit_side, f - 1)
    path = np.stack([np.polyval(fit_x, t[seen]), np.polyval(fit_y, t[seen])], axis=1)  # (seen, 2)
    off_path = np.linalg.norm(track[seen] - path, axis=1)  # (seen,) pixels
    return MotionStats(
        dx=float(fit_x[0] * (f - 1) / w),
        dy=float(fit_y[0] * (f - 1) / h),
        growth=float(last_side / first_side) if first_side > 0 else math.nan,
        shake=float(np.sqrt(np.mean(off_path**2)) / np.mean(side[seen])),
        tracked=float(seen.mean()),
    )


def object_kept(frames: np.ndarray, side_change: float = 2.0) -> bool:
    """Whether the main object is found in every frame of (f, h, w, 3) `frames`, its side (the root
    of its area) within 1/side_change to side_change times its side in frame 0. Motion measured on a
    clip that fails this is not the object's: colour noise has pixels near any colour in every frame
    (an untrained model's samples are tracked "in every frame" that way), and a shape that dissolves
    or multiplies moves its centroid without moving. 2 admits huvi.synthetic's growth (1.8x) and
    shrinking (0.55x)."""
    area = object_masks(frames).reshape(len(frames), -1).sum(axis=1).astype(np.float64)  # (f,) pixels
    h, w = frames.shape[1:3]
    if area[0] < MIN_OBJECT_SHARE * h * w or np.any(area < MIN_OBJECT_SHARE * h * w):
        return False
    side = np.sqrt(area / area[0])  # (f,) relative to frame 0
    return bool(np.all((side >= 1 / side_change) & (side <= side_change)))


# What each toy preference of huvi.synthetic.PREFERENCES looks like in MotionStats: the preferred
# side of a threshold halfway between what its two motions measure on huvi.synthetic's clips.
PREFERRED = {
    "direction": lambda s: s.dx > 0,  # moving right
    "growth": lambda s: s.growth > 1.0,  # growing (1.8x against 0.55x)
    "smoothness": lambda s: s.shake < 0.1,  # steady (about 0.02 against 0.3)
}


def shows_preference(preference: str, stats: MotionStats) -> bool:
    """Whether a clip's measured motion shows the preferred side of `preference` (False when no
    object was tracked)."""
    if preference not in PREFERRED:
        raise ValueError(f"unknown preference {preference!r}; choose one of {', '.join(PREFERRED)}")
    return not math.isnan(stats.dx) and bool(PREFERRED[preference](stats))
