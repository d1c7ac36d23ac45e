"""Clips of moving shapes with their prompts: what the demo model (examples/pretrain_demo.py) learns from.

One clip is one flat-coloured shape (a square, a disc or a triangle) gliding in a straight line over
a soft background of colour waves, the kind of background huvi.synthetic's squares move over. Every
property is drawn from the clip's seed: shape, colour, size, direction (left and right each 35% of
clips, up and down 15% each), speed (the shape crosses 25-60% of the frame over the clip) and start.
Its prompt names the shape, colour and direction ("a red disc moving right") or, for half the clips,
leaves the direction out ("a red disc moving across the frame", "a shape moving"), so a model
trained on them moves a shape either way when a prompt does not say which (room for a preference).

`prompt_frame(prompt, seed)` is a clip's frame 0 alone, its shape and colour the ones the prompt
names, the shape in the middle along its direction: the demo preset's first frame when the user
gives none (generate.first_frame.source: shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from huvi.synthetic import rated_couples, wave_background

SHAPES = ("square", "disc", "triangle")
COLOURS = {  # name -> RGB in [0, 1], saturated so the shape stands out of the greyish background
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.6, 0.1, 0.8),
    "orange": (1.0, 0.55, 0.0),
    "cyan": (0.1, 0.9, 0.9),
}
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}  # (x, y) unit steps, y down
DIRECTION_WEIGHTS = (0.35, 0.35, 0.15, 0.15)  # right, left, up, down
GENERIC_SHARE = 0.5  # clips whose prompt leaves the direction out
TRAVEL = (0.25, 0.6)  # the shape's travel over the clip, in frame sizes
SIDE = (0.22, 0.36)  # the shape's side (a disc's diameter), in frame sizes
SYNONYMS = {"circle": "disc", "disk": "disc", "ball": "disc", "box": "square", "cube": "square"}


@dataclass(frozen=True)
class ShapeClip:
    frames: np.ndarray  # (f, size, size, 3) uint8
    prompt: str
    shape: str
    colour: str
    direction: str
    travel: float  # frame sizes covered, first to last frame


def _mask(shape: str, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """(size, size) bool: `shape` of side `side` centred at (cx, cy), pixel centres at i + 0.5."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = xx - cx, yy - cy
    half = side / 2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "disc":
        return dx**2 + dy**2 <= half**2
    # an upright triangle in the square's box: apex at the top, base at the bottom
    rel = (dy + half) / side  # 0 at the apex, 1 at the base
    return (rel >= 0) & (rel <= 1) & (np.abs(dx) <= half * rel)


def _prompt(rng: np.random.Generator, shape: str, colour: str, direction: str) -> str:
    if rng.random() < GENERIC_SHARE:
        article = "an" if colour[0] in "aeiou" else "a"
        return str(rng.choice([f"{article} {colour} {shape} moving across the frame", f"a {colour} {shape} moving", "a shape moving across the frame", "a shape moving"]))
    return str(rng.choice([f"a {colour} {shape} moving {direction}", f"a {colour} {shape} sliding {direction}"]))


def shape_clip(
    seed: int,
    frames: int = 8,
    size: int = 32,
    shape: str | None = None,
    colour: str | None = None,
    direction: str | None = None,
    centred: bool = False,
) -> ShapeClip:
    """The clip of `seed`: one shape moving in a straight line at a steady speed (module docstring);
    `shape`, `colour` and `direction` replace the drawn ones (the other draws stay those of `seed`).

    centred: the shape starts in the middle of the frame along its direction of motion, where it has
    room to move either way, and its travel is cut to what fits (about 0.32-0.39 of the frame).
    Drawn starts keep the whole path inside the frame, so a shape drawn near one edge moves toward
    the other one: its first frame gives the direction away."""
    rng = np.random.default_rng(seed)
    drawn_shape, drawn_colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    shape, colour = shape or drawn_shape, colour or drawn_colour
    direction = direction or str(rng.choice(list(DIRECTIONS), p=DIRECTION_WEIGHTS))
    side = rng.uniform(*SIDE) * size
    travel = rng.uniform(*TRAVEL)
    background = wave_background(rng, size)
    ux, uy = DIRECTIONS[direction]
    if centred:
        travel = min(travel, (size - side) / 2 / size)  # from the middle to an edge, the shape inside
    span = travel * size  # pixels
    # the start, so that the whole path stays inside the frame
    low, high = side / 2 + span * (ux < 0 or uy < 0), size - side / 2 - span * (ux > 0 or uy > 0)
    drawn = rng.uniform(low, high)  # drawn when centred too, so that the draws after it stay those of `seed`
    along = size / 2 if centred else drawn
    across = rng.uniform(side / 2, size - side / 2)
    x0, y0 = (along, across) if ux else (across, along)
    prompt = _prompt(rng, shape, colour, direction)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        step = span * i / max(1, frames - 1)
        frame = background.copy()
        frame[_mask(shape, x0 + ux * step, y0 + uy * step, side, size)] = COLOURS[colour]
        out[i] = (frame * 255).round().clip(0, 255).astype(np.uint8)
    return ShapeClip(out, prompt, shape, colour, direction, float(travel))


def direction_couples(root: Path, clips: int = 12, seed: int = 0, frames: int = 30, size: int = 32, prompt: str = "a shape moving", spread: bool = True) -> Path:
    """Write a category of the demo model's own kind of clips rated for moving right over moving
    left, as huvi.synthetic.preference_category rates its squares: in couples, clips 2k (right) and
    2k+1 (left) are one shape (colour, size, speed, background: seed * 1000 + k) that differ only in
    direction; with `spread` the right-moving ones are rated 4 or 5 and the others 1 or 2 at random,
    without it 5 and 1. The prompt is one the demo model learned that leaves the direction out; 30
    frames are the demo preset's 8 at stride 3 and room for a temporal crop."""

    def couple(k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return tuple(shape_clip(seed * 1000 + k, frames, size, direction=side).frames for side in ("right", "left"))

    return rated_couples(root, couple, f"direction_{seed}", clips, seed, prompt, spread)


def prompt_frame(prompt: str, seed: int, size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8: frame 0 of `shape_clip(seed)` with the shape, colour and direction
    `prompt` names (each drawn from the seed when the prompt names none: "a shape moving"), the
    shape centred along its direction: a first frame that leaves the model, and a preference
    trained into it, room to move the shape either way."""
    words = [SYNONYMS.get(word, word) for word in prompt.lower().replace(",", " ").split()]
    shape = next((word for word in words if word in SHAPES), None)
    colour = next((word for word in words if word in COLOURS), None)
    direction = next((word for word in words if word in DIRECTIONS), None)
    return shape_clip(seed, frames=1, size=size, shape=shape, colour=colour, direction=direction, centred=True).frames[0]
