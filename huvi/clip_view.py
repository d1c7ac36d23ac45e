"""How the app shows one clip: a small thumbnail, and what training actually sees of it.

    DIR/.huvi/thumbs/{clip}.png    the clip's first frame, at most THUMB pixels high (derived;
                                   rebuilt when the clip is newer)

Training reads every `data.stride`-th frame (up to `data.max_cached_frames`), fitted to
`data.width` x `data.height` by covering the size and cutting the centre (huvi.video.fit_frame), and
trains on a window of `data.frames` of them (anywhere among the cached ones with
`data.temporal_crop`); frame 0 of the window is the clean condition. `training_view` returns exactly
those frames, and the first frame as stored with the kept rectangle outlined.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from huvi.config import DataConfig
from huvi.io import atomic_write
from huvi.video import read_clip

THUMB_DIR = Path(".huvi") / "thumbs"
THUMB = 72  # thumbnail height in pixels
SHOWN_WIDTH = 480  # the first frame as stored is shown at most this wide
OUTLINE = (79, 70, 229)


def thumbnail(root: Path, name: str) -> Path:
    """DIR/.huvi/thumbs/{name}.png: clip `name`'s first frame, small; made when missing or older than
    the clip. A HuviError when the clip does not decode."""
    clip = Path(root) / "clips" / name
    thumb = Path(root) / THUMB_DIR / f"{name}.png"
    if thumb.is_file() and thumb.stat().st_mtime_ns >= clip.stat().st_mtime_ns:
        return thumb
    first = read_clip(clip, None, None, max_frames=1)[0]  # (h, w, 3) as stored
    image = Image.fromarray(first)
    image.thumbnail((THUMB * 4, THUMB))
    atomic_write(thumb, lambda tmp: image.save(tmp, format="PNG"))
    return thumb


def crop_box(width: int, height: int, data: DataConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the part of a width x height frame that training keeps: the
    largest centred rectangle of the training aspect ratio (what `fit_frame` scales to the training size)."""
    if width * data.height > height * data.width:  # wider than the training size: the sides are cut
        kept = round(height * data.width / data.height)
        left = (width - kept) // 2
        return left, 0, left + kept, height
    kept = round(width * data.height / data.width)  # taller: top and bottom are cut
    top = (height - kept) // 2
    return 0, top, width, top + kept


@dataclass(frozen=True)
class TrainingView:
    first: np.ndarray  # (h, w, 3) uint8: frame 0 as stored (at most SHOWN_WIDTH wide), the kept rectangle outlined
    frames: np.ndarray  # (n, data.height, data.width, 3) uint8: every frame training caches, in order
    stride: int  # frames[i] is source frame i * stride
    window: int  # data.frames: one training clip is a run of this many of `frames`
    temporal_crop: bool  # the run starts anywhere among `frames` (True) or always at frame 0
    stored: tuple[int, int]  # (width, height) of the clip as stored
    crop: tuple[int, int, int, int]  # the kept rectangle in stored pixels

    @property
    def enough(self) -> bool:
        """Whether the clip is long enough to train on."""
        return len(self.frames) >= self.window


def training_view(path: Path, data: DataConfig) -> TrainingView:
    """What training reads of the clip at `path` under `data` (a HuviError when it does not decode)."""
    first = read_clip(path, None, None, max_frames=1)[0]
    height, width = first.shape[:2]
    box = crop_box(width, height, data)
    frames = read_clip(path, data.width, data.height, stride=data.stride, max_frames=data.max_cached_frames)
    image = Image.fromarray(first)
    scale = min(1.0, SHOWN_WIDTH / width)
    if scale < 1.0:
        image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
    line = max(2, round(min(image.size) / 60))
    ImageDraw.Draw(image).rectangle([round(v * scale) for v in box], outline=OUTLINE, width=line)
    return TrainingView(np.asarray(image), frames, data.stride, data.frames, data.temporal_crop, (width, height), box)
