"""A rated toy category written freely, as a person's own clips come, and its control: the category
of docs/LEARNING.md's "A category written freely" (preference_in_samples.py --runs samples them).

16 clips of the demo model's kind (huvi.demo_data.shape_clip of 9100 + k, or --clips-from + k), drawn one by one: each
its own shape, colour, size, speed, background and start (no couples), 8 moving right and 8 left in
a random order; rated as a person might, right 4-5 and left 1-3, with one right-moving clip rated 2
by a slip. The control holds the same clips rated blind to direction: each side gets the same eight
ratings, in its own random order.

    python examples/free_category.py DIR        # writes DIR/rated and DIR/control
    python examples/free_category.py DIR --seed 1 --clips-from 9200   # another category of the kind
    python -m huvi train --category DIR/rated --out runs/free --preset demo
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np

from huvi.demo_data import shape_clip
from huvi.io import write_json
from huvi.video import write_clip

CLIPS, FRAMES, SIZE = 16, 30, 32  # 30 frames: the demo preset's 8 at stride 3 and room for a crop
PROMPT = "a shape moving"


def free_category(root: Path, seed: int = 4242, clips_from: int = 9100) -> None:
    """Write ROOT/rated and ROOT/control (category.json + clips/)."""
    rng = np.random.default_rng(seed)
    sides = rng.permutation(["right"] * (CLIPS // 2) + ["left"] * (CLIPS // 2))
    (root / "rated" / "clips").mkdir(parents=True, exist_ok=True)
    scores, side_of = {}, {}
    for k, side in enumerate(sides):
        name = f"clip_{k:02d}.mp4"
        write_clip(root / "rated" / "clips" / name, shape_clip(clips_from + k, FRAMES, SIZE, direction=str(side)).frames)
        scores[name] = int(rng.choice([4, 5])) if side == "right" else int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        side_of[name] = str(side)
    scores[sorted(n for n in scores if side_of[n] == "right")[3]] = 2  # the slip
    write_json(root / "rated" / "category.json", {"prompt": PROMPT, "scores": scores})
    shutil.copytree(root / "rated" / "clips", root / "control" / "clips", dirs_exist_ok=True)
    ratings = list(rng.choice([scores[n] for n in sorted(scores)], CLIPS // 2, replace=False))
    control = {}
    for side in ("right", "left"):
        names = [n for n in sorted(scores) if side_of[n] == side]
        control |= {n: int(v) for n, v in zip(names, rng.permutation(ratings))}
    write_json(root / "control" / "category.json", {"prompt": PROMPT, "scores": control})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write rated/ and control/ in")
    parser.add_argument("--seed", type=int, default=4242, help="the draw of directions and ratings")
    parser.add_argument("--clips-from", type=int, default=9100, help="clip k is huvi.demo_data.shape_clip(CLIPS_FROM + k)")
    args = parser.parse_args()
    free_category(args.root, args.seed, args.clips_from)


if __name__ == "__main__":
    main()
