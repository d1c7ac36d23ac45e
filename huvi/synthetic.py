"""Synthetic categories with a known, visible preference: for the demo, the tests and examples.

A clip is a coloured square gliding over a soft textured background. In a "direction" category
squares moving right are rated 4-5 and squares moving left 1-2; start positions, colours, sizes
and speeds vary, so neither the first nor the last frame alone gives the rating away.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from huvi.io import write_json
from huvi.video import write_clip


def moving_square(direction: int, seed: int, frames: int = 32, size: int = 64) -> np.ndarray:
    """(frames, size, size, 3) uint8: a square moving left (direction=-1) or right (+1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi, 3)
    background = 0.35 + 0.15 * np.stack([np.sin(6 * xx + phase[0]), np.cos(5 * yy + phase[1]), np.sin(4 * (xx + yy) + phase[2])], -1)
    side = int(rng.integers(size // 5, size // 3))
    color = rng.uniform(0.6, 1.0, 3) * rng.permutation([1.0, 0.5, 0.1])
    speed = rng.uniform(0.6, 1.0) * (size - side) / frames  # pixels per frame; crosses most of the frame
    travel = speed * (frames - 1)
    x0 = rng.uniform(0, size - side - travel) if direction > 0 else rng.uniform(travel, size - side)
    y = int(rng.integers(0, size - side))
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        frame = background.copy()
        x = int(round(x0 + direction * speed * i))
        frame[y : y + side, x : x + side] = color
        out[i] = (frame * 255).clip(0, 255).astype(np.uint8)
    return out


def direction_category(root: Path, clips: int = 12, seed: int = 0, frames: int = 32, size: int = 64, prompt: str = "a square sliding across the frame") -> Path:
    """Write a category whose ratings reward rightward motion (4-5) over leftward (1-2)."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = {}
    for i in range(clips):
        direction = 1 if i % 2 == 0 else -1
        name = f"{'right' if direction > 0 else 'left'}_{seed}_{i:02d}.mp4"
        write_clip(root / "clips" / name, moving_square(direction, seed=seed * 1000 + i, frames=frames, size=size))
        scores[name] = int(rng.integers(4, 6)) if direction > 0 else int(rng.integers(1, 3))
    write_json(root / "category.json", {"prompt": prompt, "scores": scores})
    return root


def shuffled_ratings(root: Path, seed: int) -> None:
    """Permute a category's ratings among its clips: a control whose preference is unlearnable."""
    meta = json.loads((root / "category.json").read_text())
    names = sorted(meta["scores"])
    values = [meta["scores"][n] for n in names]
    np.random.default_rng(seed).shuffle(values)
    meta["scores"] = dict(zip(names, (int(v) for v in values)))
    write_json(root / "category.json", meta)
