"""What a person needs to label an explicit pair (DenseDPO, Wu et al. 2025): both clips side by
side in one video, so they play in sync frame for frame, over a timeline cut into the pair's
segments that lights up the segment playing and marks the frames training never sees.

    DIR/.huvi/pairs/{a}--{b}.{n}x{frames}s{stride}[l{per_latent}].mp4
                                      the preview of a pair of n segments over `frames` frames at
                                      `stride` (and `per_latent` frames per latent frame where
                                      the family compresses time; derived, rebuilt when either
                                      clip changes)

Segments lie where training puts them (`huvi.segments.segment_spans`): whole latent frames of the
first `data.frames` frames at `data.stride`, with the config of the run that made the pair when it
was made by `dense-pairs`, else the config the caller gives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from huvi.category import pair_length_problems
from huvi.config import DataConfig, HuviConfig
from huvi.errors import HuviError
from huvi.pairs import ExplicitPair
from huvi.runs import Run
from huvi.segments import segment_spans
from huvi.video import read_clip, write_clip

logger = logging.getLogger(__name__)

PREVIEW_DIR = Path(".huvi") / "pairs"
STRIP = 28  # timeline height in pixels
GAP = 4  # white columns between the two clips
ACTIVE, IDLE, OUTSIDE, PLAYHEAD = (79, 70, 229), (224, 231, 255), (229, 231, 235), (17, 24, 39)
MAX_PREVIEW_FRAMES = 512  # a longer clip is previewed up to here: segments cover only the training window


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based
    start: int  # source frames [start, end) of the clip file
    end: int
    label: str | None  # "a", "b", "tie", or None (not labelled)

    def seconds(self, fps: float) -> tuple[float, float]:
        return self.start / fps, self.end / fps


def pair_config(root: Path, pair: ExplicitPair, default: HuviConfig) -> HuviConfig:
    """The config the pair's segments refer to (its data and model family): the config of the run
    dense-pairs made it with (while that run folder exists), else `default`."""
    made_by = (pair.aligned or {}).get("run")
    if made_by and Run(Path(made_by)).exists():
        try:
            return Run(Path(made_by)).read_config()
        except HuviError as err:
            logger.warning("pair %s: the config of %s does not load (%s); using the preset's frames", pair.name, made_by, err)
    return default


def pair_segments(pair: ExplicitPair, data: DataConfig, per_latent: int = 1) -> list[Segment]:
    """The pair's segments with their source-frame spans and labels; a clip-level pair is one
    segment over the whole training window, labelled with its winner. `per_latent`: the model
    family's video frames per latent frame."""
    if problems := pair_length_problems([pair], {}, data, per_latent):  # a segment count that does not divide the window
        raise HuviError(problems[0])
    spans = segment_spans(len(pair.labels), data.frames, data.stride, per_latent)
    return [Segment(k, start, end, label) for k, ((start, end), label) in enumerate(zip(spans, pair.labels))]


def clip_fps(path: Path, default: float = 8.0) -> float:
    """Frames per second the file declares (for showing seconds; frames are never counted from it)."""
    try:
        fps = float(iio.immeta(path).get("fps") or 0)
    except Exception:  # noqa: BLE001 (any container imageio cannot read: fall back)
        return default
    return fps if fps > 0 else default


def _preview_stem(pair: ExplicitPair) -> str:
    return f"{Path(pair.a).stem}--{Path(pair.b).stem}"


def preview_path(root: Path, pair: ExplicitPair, data: DataConfig, per_latent: int = 1) -> Path:
    """Where the preview of `pair` is kept: named by everything its timeline depends on besides
    the clips (whose changes the file's age catches), so a stale timeline is never shown."""
    latent = f"l{per_latent}" if per_latent > 1 else ""  # frames per latent frame, where the family compresses time
    return Path(root) / PREVIEW_DIR / f"{_preview_stem(pair)}.{len(pair.labels)}x{data.frames}s{data.stride}{latent}.mp4"


def remove_previews(root: Path, pair: ExplicitPair) -> None:
    """Delete every preview of `pair` (they are derived from it: they go when it goes)."""
    for path in (Path(root) / PREVIEW_DIR).glob(f"{_preview_stem(pair)}.*.mp4"):
        path.unlink(missing_ok=True)


def pair_preview(root: Path, pair: ExplicitPair, data: DataConfig, height: int = 256, per_latent: int = 1) -> Path:
    """The side-by-side preview of `pair` (first clip left) with its segment timeline below,
    written once and reused while neither clip changes."""
    root = Path(root)
    clips = [root / "clips" / pair.a, root / "clips" / pair.b]
    out = preview_path(root, pair, data, per_latent)
    if out.is_file() and all(out.stat().st_mtime_ns > c.stat().st_mtime_ns for c in clips):
        return out
    _, stored_h, stored_w, _ = read_clip(clips[0], None, None, max_frames=1).shape
    width = max(2, round(stored_w * height / stored_h / 2) * 2)  # the first clip's aspect, even for H.264
    # both fitted to height x width while decoding: (f, height, width, 3) each
    left, right = (read_clip(c, width, height, max_frames=MAX_PREVIEW_FRAMES) for c in clips)
    frames = min(len(left), len(right))
    left, right = left[:frames], right[:frames]
    white = np.full((frames, height, GAP, 3), 255, dtype=np.uint8)
    video = np.concatenate([left, white, right], axis=2)  # (f, height, 2 * width + GAP, 3)
    strip = timeline_strips(pair_segments(pair, data, per_latent), frames, video.shape[2])  # (f, STRIP, W, 3)
    write_clip(out, np.concatenate([video, strip], axis=1), fps=round(clip_fps(clips[0])))
    logger.info("pair preview %s (%d frames)", out, frames)
    return out


def timeline_strips(segments: list[Segment], frames: int, width: int) -> np.ndarray:
    """One timeline image per frame: segment blocks numbered from 1, the one holding the frame
    lit, frames past the training window grey, a playhead at the frame. -> (frames, STRIP, width, 3)."""
    x = [round(i * width / frames) for i in range(frames + 1)]  # left edge of every frame's column
    font = ImageFont.load_default()
    bases = []
    for active in [*range(len(segments)), None]:  # one base image per lit segment, and none lit
        image = Image.new("RGB", (width, STRIP), OUTSIDE)
        draw = ImageDraw.Draw(image)
        for seg in segments:
            left, right = x[min(seg.start, frames)], x[min(seg.end, frames)]
            if right <= left:
                continue
            lit = seg.index == active
            draw.rectangle([left, 0, right - 1, STRIP - 1], fill=ACTIVE if lit else IDLE, outline=(255, 255, 255))
            draw.text(((left + right) / 2, STRIP / 2), str(seg.index + 1), fill=(255, 255, 255) if lit else PLAYHEAD, font=font, anchor="mm")
        bases.append(np.asarray(image))
    strips = np.empty((frames, STRIP, width, 3), dtype=np.uint8)
    for t in range(frames):
        active = next((s.index for s in segments if s.start <= t < s.end), None)
        strips[t] = bases[active if active is not None else -1]
        head = min(width - 2, round((t + 0.5) * width / frames))
        strips[t, :, head : head + 2] = PLAYHEAD
    return strips
