"""Reading and writing clips with imageio (its ffmpeg plugin ships its own binary).

Frames are resized and centre-cropped one at a time while reading, so a long or large clip never
sits in memory at full size; only the frames the stride keeps are decoded into arrays. Frames larger
than `MAX_DECODE_PIXELS` (an 8K clip) are shrunk by ffmpeg itself while decoding, so a full-size
frame of such a clip never reaches Python.
"""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps

from huvi.errors import HuviError
from huvi.io import atomic_write

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".gif")
# Above this many pixels per frame ffmpeg scales while decoding: 4096x2160 (DCI 4K) is 27 MB per RGB
# frame, 7680x4320 (8K) 100 MB. Smaller frames are decoded as before, at full size, and fitted by PIL.
MAX_DECODE_PIXELS = 4096 * 2160


class _DropScaleNotice(logging.Filter):
    """imageio-ffmpeg warns whenever the frames it reads differ in size from the stored ones, which
    is exactly what `_frames` asks ffmpeg for on large clips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("The frame size for reading")


logging.getLogger("imageio_ffmpeg").addFilter(_DropScaleNotice())


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize so the frame covers width x height, then centre-crop to it. (h, w, 3) uint8 -> (height, width, 3)."""
    image = Image.fromarray(frame).convert("RGB")
    return np.asarray(ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5)))


def _frames(path: Path, width: int | None, height: int | None):
    """imageio's frame iterator over `path`. Given a target size, frames above MAX_DECODE_PIXELS come
    out of ffmpeg already scaled to cover width x height (aspect kept; `fit_frame` crops them)."""
    if width is None or height is None or path.suffix.lower() == ".gif":
        return iio.imiter(path)
    large = f"gt(iw*ih,{MAX_DECODE_PIXELS})"
    scale = f"scale=w='if({large},{width},iw)':h='if({large},{height},ih)':force_original_aspect_ratio=increase"
    return iio.imiter(path, plugin="FFMPEG", output_params=["-vf", scale])


def read_clip(path: Path, width: int | None, height: int | None, stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Every `stride`-th frame of `path` (up to `max_frames`), fitted to width x height (None: as stored).

    Returns (f, height, width, 3) uint8. Raises HuviError with one sentence when the file cannot be
    decoded or holds no frames. Frames are counted by decoding, never from container metadata.
    """
    path = Path(path)
    if path.is_dir():
        raise HuviError(f"{path.name}: is a folder, not a clip; give the video files in it.")
    if not path.is_file():
        raise HuviError(f"{path.name}: file not found.")
    if path.stat().st_size == 0:
        raise HuviError(f"{path.name}: the file is empty; upload the clip again.")
    frames = []
    try:
        for index, frame in enumerate(_frames(path, width, height)):
            if index % stride:
                continue
            if frame.ndim == 2:
                frame = np.stack([frame] * 3, axis=-1)
            frame = frame[..., :3]
            frames.append(frame if width is None or height is None else fit_frame(frame, width, height))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except Exception as err:  # imageio raises many types for unreadable input
        if not frames:
            raise HuviError(
                f"{path.name}: could not be decoded as a video ({type(err).__name__}); re-encode it as an H.264 MP4."
            ) from None
        logger.warning("%s: decoding stopped early after %d frames (%s); using those.", path.name, len(frames), err)
    if not frames:
        raise HuviError(f"{path.name}: the file holds no video frames; re-encode it as an H.264 MP4.")
    return np.stack(frames)


def write_clip(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Write (f, h, w, 3) uint8 frames as MP4 (H.264, any size) or GIF, by the path's suffix, atomically."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0))
        return

    def write_mp4(tmp: Path) -> None:
        iio.imwrite(tmp, frames, extension=path.suffix or ".mp4", fps=fps, codec="libx264", macro_block_size=1)
        if tmp.stat().st_size == 0:  # ffmpeg reports some failures only on its stderr
            raise HuviError(f"Could not write {path.name}: ffmpeg produced an empty file.")

    atomic_write(path, write_mp4)
