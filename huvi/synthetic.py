"""Synthetic categories with a known, visible preference: for the demo, the tests and examples.

A clip is a coloured square gliding over a soft textured background. In a "direction" category
squares moving right are rated 4-5 and squares moving left 1-2; start positions, colours, sizes
and speeds vary, so neither the first nor the last frame alone gives the rating away. A
`preference_category` is rated by one of PREFERENCES (growing over shrinking, a steady glide over
a shaking one, ...) and holds couples of clips that differ only in that preference. In a
`defect_category` (DenseDPO) each explicit pair is two copies of one clip that differ only by a
short defect in some of their segments (a whole-frame flicker, or a smear local to the moving
square), labelled per segment and per clip.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from huvi.io import write_json
from huvi.video import write_clip


def wave_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) floats in [0.2, 0.5]: three slow colour waves of random phases."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi, 3)
    return 0.35 + 0.15 * np.stack([np.sin(6 * xx + phase[0]), np.cos(5 * yy + phase[1]), np.sin(4 * (xx + yy) + phase[2])], -1)


def moving_square(direction: int, seed: int, frames: int = 32, size: int = 64, growth: float = 0.0, jitter: float = 0.0) -> np.ndarray:
    """(frames, size, size, 3) uint8: a square moving left (direction=-1) or right (+1).

    growth: the side changes linearly to (1 + growth) times its first value by the last frame
    (0.8 grows, -0.45 shrinks), about the square's centre. jitter: each frame's position is shaken
    by that fraction of the side (Gaussian) around the steady path. With both 0 the clip is the
    same as before these options existed (their random draws come after the others)."""
    rng = np.random.default_rng(seed)
    background = wave_background(rng, size)
    side = int(rng.integers(size // 5, size // 3))
    color = rng.uniform(0.6, 1.0, 3) * rng.permutation([1.0, 0.5, 0.1])
    speed = rng.uniform(0.6, 1.0) * (size - side) / frames  # pixels per frame; crosses most of the frame
    travel = speed * (frames - 1)
    x0 = rng.uniform(0, size - side - travel) if direction > 0 else rng.uniform(travel, size - side)
    y = int(rng.integers(0, size - side))
    shake = rng.normal(0.0, jitter * side, (frames, 2)) if jitter else np.zeros((frames, 2))
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        frame = background.copy()
        grown = max(2, int(round(side * (1 + growth * i / max(1, frames - 1)))))
        cx = x0 + direction * speed * i + side / 2 + shake[i, 0]  # the steady path's centre, shaken
        cy = y + side / 2 + shake[i, 1]
        left = int(np.clip(round(cx - grown / 2), 0, size - grown))
        top = int(np.clip(round(cy - grown / 2), 0, size - grown))
        frame[top : top + grown, left : left + grown] = color
        out[i] = (frame * 255).clip(0, 255).astype(np.uint8)
    return out


# Toy preferences about how the square moves; the first motion of each pair is rated high. The
# other properties vary at random (direction where it is not the preference), so only the named
# one separates high from low ratings, and no single frame gives it away.
PREFERENCES = {
    "direction": ({"direction": 1}, {"direction": -1}),  # moving right over moving left
    "growth": ({"growth": 0.8}, {"growth": -0.45}),  # growing over shrinking
    "smoothness": ({"jitter": 0.0}, {"jitter": 0.25}),  # a steady glide over a shaking one
}


def direction_category(
    root: Path,
    clips: int = 12,
    seed: int = 0,
    frames: int = 32,
    size: int = 64,
    prompt: str = "a square sliding across the frame",
    spread: bool = True,
) -> Path:
    """Write a category whose ratings reward rightward motion over leftward.

    With `spread` a rater's noise is mimicked: right-moving clips get 4 or 5 and left-moving ones 1 or
    2 at random, so pairs within one direction carry no learnable preference. Without it every
    right-moving clip is rated 5 and every left-moving one 1, so direction alone decides every pair
    (what a held-out test of the preference should score)."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = {}
    for i in range(clips):
        direction = 1 if i % 2 == 0 else -1
        name = f"{'right' if direction > 0 else 'left'}_{seed}_{i:02d}.mp4"
        write_clip(root / "clips" / name, moving_square(direction, seed=seed * 1000 + i, frames=frames, size=size))
        if spread:
            scores[name] = int(rng.integers(4, 6)) if direction > 0 else int(rng.integers(1, 3))
        else:
            scores[name] = 5 if direction > 0 else 1
    write_json(root / "category.json", {"prompt": prompt, "scores": scores})
    return root


def preference_category(
    root: Path,
    preference: str,
    clips: int = 12,
    seed: int = 0,
    frames: int = 32,
    size: int = 64,
    prompt: str = "a square moving across the frame",
    spread: bool = True,
) -> Path:
    """Write a category rated by one of PREFERENCES, in couples: clips 2k (preferred) and 2k+1 (the
    other) are the same square (background, size, colour, speed, start and, unless the preference is
    about it, direction) and differ only in the preference. With 6 clips a side, independent draws
    leave chance confounds (in one 12-clip set 4 of the 6 preferred squares moved left and 2 of
    the others) that DPO learns as readily as the preference, and held-out accuracy then measures
    them. With `spread` the preferred are rated 4 or 5 and the others 1 or 2 at random (a rater's
    noise); without it 5 and 1, so the preference alone decides every pair (held-out sets)."""
    if preference not in PREFERENCES:
        raise ValueError(f"unknown preference {preference!r}; choose one of {', '.join(PREFERENCES)}")

    def couple(k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        direction = int(rng.choice([-1, 1]))  # the couple's, unless the preference is about it
        preferred, other = ({"direction": direction} | motion for motion in PREFERENCES[preference])
        return tuple(moving_square(seed=seed * 1000 + k, frames=frames, size=size, **motion) for motion in (preferred, other))

    return rated_couples(root, couple, f"{preference}_{seed}", clips, seed, prompt, spread)


def rated_couples(
    root: Path, couple: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]], stem: str, clips: int, seed: int, prompt: str, spread: bool
) -> Path:
    """Write a category of clips//2 couples: couple(k, rng) gives clips 2k (preferred) and 2k+1 (the
    other), named STEM_ii.mp4. With `spread` the preferred are rated 4 or 5 and the others 1 or 2 at
    random (a rater's noise, drawn from `rng` after the couple's own draws); without it 5 and 1."""
    if clips % 2:
        raise ValueError(f"a category of couples needs an even number of clips, not {clips}")
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = {}
    for k in range(clips // 2):
        for i, (preferred, frames) in enumerate(zip((True, False), couple(k, rng)), start=2 * k):
            name = f"{stem}_{i:02d}.mp4"
            write_clip(root / "clips" / name, frames)
            scores[name] = (int(rng.integers(4, 6)) if preferred else int(rng.integers(1, 3))) if spread else (5 if preferred else 1)
    write_json(root / "category.json", {"prompt": prompt, "scores": scores})
    return root


def shuffled_ratings(root: Path, seed: int) -> None:
    """A control whose preference is unlearnable, for a `preference_category`: the preferred clips
    (2k) and the others (2k+1) get the same six ratings (3 high, 3 low, drawn from the category's
    own), each side in its own random order. Every pair of a preferred and another clip then has a
    twin with the roles swapped, so the preferred clip wins exactly as many pairs as it loses.

    (A plain permutation of the 12 ratings left 2 to 4 of the 6 preferred clips rated high; swapping
    the ratings of half the couples still let one side win 19 pairs to 10, through the 5s and 4s;
    the controls' held-out accuracy followed each imbalance, down to 0.13.)"""
    meta, preferred, others = _couples(root, "shuffled_ratings")
    rng = np.random.default_rng(seed)
    high = sorted((meta["scores"][n] for n in preferred), reverse=True)  # the preferred's ratings, 4-5
    low = sorted(meta["scores"][n] for n in others)  # the others', 1-2
    values = _half_high(rng, high, low)
    for side in (preferred, others):
        for name, value in zip(side, rng.permutation(values)):
            meta["scores"][name] = int(value)
    write_json(root / "category.json", meta)


def blind_ratings(root: Path, seed: int) -> None:
    """A control rated by someone who cannot see the preference, for a category of couples: both
    clips of a couple, the same square but for the preference, get one rating. Half of the couples
    are rated high and half low, with the category's own values (the preferred side's 4-5s and the
    other side's 1-2s, drawn at random), so there are as many pairs as in the rated category.
    Every two couples with different ratings give four pairs, one for each side of each couple, so
    the preferred clip wins as many pairs as it loses, with every square as well as overall.

    (`shuffled_ratings` balances the sides over the whole category only: within a couple one side
    is rated above the other, so a square comes with a preferred side after all, and which side
    that is differs from square to square; DPO learns those. On the demo model, six seeds, the
    share of generated shapes moving right moved -22 to +31 points with those controls and -16 to
    +19 with these, from 32 first frames; from 96, -8 to +6: docs/LEARNING.md, "In what it generates".)"""
    meta, preferred, others = _couples(root, "blind_ratings")
    rng = np.random.default_rng(seed)
    high = [meta["scores"][n] for n in preferred]  # the preferred side's ratings, 4-5
    low = [meta["scores"][n] for n in others]  # the other side's, 1-2
    for couple, value in zip(zip(preferred, others), rng.permutation(_half_high(rng, high, low))):
        for name in couple:
            meta["scores"][name] = int(value)
    write_json(root / "category.json", meta)


def _couples(root: Path, control: str) -> tuple[dict, list[str], list[str]]:
    """A category of couples' category.json, its preferred clips (2k) and the others (2k+1)."""
    meta = json.loads((root / "category.json").read_text())
    names = sorted(meta["scores"])  # clip 2k and 2k+1 are a couple
    if len(names) % 2:
        raise ValueError(f"{control} needs a category of couples (an even number of clips)")
    return meta, names[0::2], names[1::2]


def _half_high(rng: np.random.Generator, high: list[int], low: list[int]) -> list[int]:
    """A control's ratings, one per couple: half of them from `high`, the rest from `low`, drawn at random."""
    half = len(high) // 2
    return rng.permutation(high)[:half].tolist() + rng.permutation(low)[: len(high) - half].tolist()


def flicker(clip: np.ndarray, frames: Iterable[int], stride: int, gain: int = 80) -> np.ndarray:
    """A copy of `clip` whose training frames `frames` (every `stride`-th source frame, as
    huvi reads it) are washed `gain` grey levels brighter: a flicker. Every source frame a training
    frame stands for is changed, so the defect is there at any stride offset."""
    out = clip.copy()
    for j in frames:
        window = out[j * stride : (j + 1) * stride].astype(np.int16) + gain
        out[j * stride : (j + 1) * stride] = window.clip(0, 255).astype(np.uint8)
    return out


def smear(clip: np.ndarray, frames: Iterable[int], stride: int, reach: int = 2) -> np.ndarray:
    """A copy of `clip` whose training frames `frames` are each replaced by the mean of the
    training frames `reach` either side: a ghosting smear. Where nothing moves the mean is the frame
    itself, so the defect is local: the square and its trail, a small share of the frame. Every
    source frame a training frame stands for is changed, as in `flicker`."""
    out = clip.copy()
    source = clip.astype(np.float32)
    for j in frames:
        for i in range(j * stride, (j + 1) * stride):
            around = [i + k * stride for k in range(-reach, reach + 1) if 0 <= i + k * stride < len(clip)]
            out[i] = source[around].mean(axis=0).round().astype(np.uint8)
    return out


DEFECTS = {"flicker": flicker, "smear": smear}


def _labels(defects_a: np.ndarray, defects_b: np.ndarray) -> tuple[list[str], str]:
    """Per segment: the clip without the defect where only one has it, else a tie; per clip: the
    one with fewer defective segments, a tie when they have as many."""
    segments = ["a" if b and not a else "b" if a and not b else "tie" for a, b in zip(defects_a, defects_b)]
    count_a, count_b = int(defects_a.sum()), int(defects_b.sum())
    return segments, "a" if count_a < count_b else "b" if count_b < count_a else "tie"


def defect_category(
    root: Path,
    defect: str = "flicker",
    pairs: int = 12,
    seed: int = 0,
    segments: int = 4,
    frames: int = 8,
    stride: int = 3,
    size: int = 32,
    rated: int = 4,
    chance: float = 0.4,
    prompt: str = "a square sliding across the frame",
    variation: float = 0.0,
) -> Path:
    """Write a category of explicit pairs whose two clips are one moving square, alike but for a
    `defect` (one of DEFECTS) in some segments (`chance` each, per clip), labelled both ways:
    "segments" (the clip without the defect where only one has it) and "winner" (the clip with fewer
    defective segments, or "tie"). Pairs with no segment preference are redrawn.

    variation: each copy also differs from the other everywhere, by its own Gaussian noise of that
    many grey levels on every pixel of every frame, as DenseDPO's aligned pairs differ everywhere a
    little (partial noising redraws every frame). Those differences carry no preference; a clip label
    credits them along with the defect, a segment label only within its segment. 0 leaves the
    copies identical outside their defects (and the category as before the option existed).

    Clips are `frames * stride` source frames long, the window training reads; a segment's defect
    is on the segment's last frame, so frame 0 is never touched. `rated` clean
    clips, all rated 3, give the motion stage clips to learn from and form no rating pairs.
    """
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    length, span = frames * stride, frames // segments
    scores = {}
    for i in range(rated):
        name = f"clean_{seed}_{i:02d}.mp4"
        write_clip(root / "clips" / name, moving_square(1 if i % 2 == 0 else -1, seed=seed * 1000 + i, frames=length, size=size))
        scores[name] = 3
    entries = []
    for i in range(pairs):
        base = moving_square(1 if i % 2 == 0 else -1, seed=seed * 1000 + rated + i, frames=length, size=size)
        while True:
            defects_a, defects_b = rng.random(segments) < chance, rng.random(segments) < chance
            labels, winner = _labels(defects_a, defects_b)
            if any(label != "tie" for label in labels):
                break
        names = [f"pair_{seed}_{i:02d}_{side}.mp4" for side in "ab"]
        for side, name, defects in zip("ab", names, (defects_a, defects_b)):
            spoilt = [k * span + span - 1 for k in np.flatnonzero(defects)]  # each defective segment's last frame
            clip = DEFECTS[defect](base, spoilt, stride)
            if variation:  # its own stream, so the defects drawn stay those of `seed`
                grain = np.random.default_rng([seed, i, ord(side)]).normal(0.0, variation, clip.shape)
                clip = (clip + grain).round().clip(0, 255).astype(np.uint8)
            write_clip(root / "clips" / name, clip)
        entries.append({"a": names[0], "b": names[1], "winner": winner, "segments": labels})
    write_json(root / "category.json", {"prompt": prompt, "scores": scores, "pairs": entries})
    return root


def shuffled_labels(root: Path, seed: int) -> None:
    """A control whose labels are blind to the defect, for a `defect_category`: exactly half of
    the labelled segments, and half of the clip winners, chosen at random, name the other clip. The
    clean side of a segment then wins as often as it loses, and so does the clip with fewer defects."""
    meta = json.loads((Path(root) / "category.json").read_text())
    rng = np.random.default_rng(seed)
    other = {"a": "b", "b": "a"}
    segments = [(i, k) for i, pair in enumerate(meta["pairs"]) for k, label in enumerate(pair["segments"]) if label != "tie"]
    for i, k in (segments[j] for j in rng.permutation(len(segments))[: len(segments) // 2]):
        meta["pairs"][i]["segments"][k] = other[meta["pairs"][i]["segments"][k]]
    winners = [i for i, pair in enumerate(meta["pairs"]) if pair["winner"] != "tie"]
    for i in (winners[j] for j in rng.permutation(len(winners))[: len(winners) // 2]):
        meta["pairs"][i]["winner"] = other[meta["pairs"][i]["winner"]]
    write_json(Path(root) / "category.json", meta)
