"""Segment labels against clip labels (DenseDPO) on a synthetic flicker, with the tiny preset.

The training category holds 6 explicit pairs: two copies of one moving square that differ only by
a flicker (one washed-out frame) in some of their 4 segments of 2 frames. Each pair is labelled per
segment (the clip without the flicker where only one has it) and per clip (the clip with fewer
flickering segments; a tie when they have as many, which teaches clip-level DPO nothing). One motion
stage is trained and shared (it sees only the clean rated clips, so it is the same for every run);
then four DPO stages, clip-level (dpo.mode=clip, the clip labels) and segment-level
(dpo.mode=dense, the segment labels), each on all the pairs and on the first third of them
(DenseDPO's claim: segment labels need about a third of the labelled data).

Each is scored on held-out categories made with other seeds (pairs the runs never saw), per
labelled segment (`evaluate --mode dense`) and per pair with a clip-level winner
(`evaluate --mode clip`). Before DPO every implicit reward is zero, i.e. accuracy 0.5.

    python examples/segment_labels.py [--work DIR] [--pairs 6] [--samples 8] [--set key=value ...]

Prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from huvi.config import load_config
from huvi.errors import HuviError
from huvi.evaluate import PairScores, evaluate_run
from huvi.io import write_json
from huvi.runs import Run
from huvi.synthetic import flicker_category
from huvi.trainer import train

HELD_OUT_SEEDS = (101, 102)


def pooled(scores: list[PairScores], unit: str) -> dict:
    """Accuracy over several held-out sets, weighted by what each scored (segments or pairs)."""
    counts = [s.segments if unit == "segments" else s.pairs for s in scores]
    total = sum(counts)
    return {unit: total, "accuracy": round(sum(s.accuracy * c for s, c in zip(scores, counts)) / total, 3), "by_set": [round(s.accuracy, 3) for s in scores]}


def keep_pairs(source: Path, dest: Path, count: int) -> Path:
    """A copy of category `source` with only its first `count` explicit pairs (and their clips)."""
    shutil.copytree(source, dest)
    meta = json.loads((dest / "category.json").read_text())
    for pair in meta["pairs"][count:]:
        for name in (pair["a"], pair["b"]):
            (dest / "clips" / name).unlink()
    meta["pairs"] = meta["pairs"][:count]
    write_json(dest / "category.json", meta)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for categories and runs (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a tiny-preset setting")
    parser.add_argument("--pairs", type=int, default=6, help="labelled pairs of the training category")
    parser.add_argument("--seed", type=int, default=1, help="seed of the training category")
    parser.add_argument("--samples", type=int, default=8, help="noise/timestep draws per pair in evaluation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="huvi-segments-"))

    category = flicker_category(work / "train", pairs=args.pairs, seed=args.seed)
    third = keep_pairs(category, work / "train_third", max(1, round(args.pairs / 3)))
    held_out = [flicker_category(work / f"held_out_{s}", pairs=12, seed=s) for s in HELD_OUT_SEEDS]

    start = time.perf_counter()
    motion_run = work / "run_motion"
    train(load_config("tiny", args.set), category, motion_run, stages=["motion"], show_progress=False)
    print(json.dumps({"motion_seconds": round(time.perf_counter() - start)}))

    results = {}
    variants = [(f"{mode}{suffix}", mode, data) for suffix, data in (("", category), ("_third", third)) for mode in ("clip", "dense")]
    for name, mode, data in variants:
        cfg = load_config("tiny", [*args.set, f"dpo.mode={mode}"])
        run = work / f"run_{name}"
        shutil.copytree(motion_run, run)  # the shared motion stage; the DPO stage starts from it
        Run(run).write_config(cfg)
        start = time.perf_counter()
        try:
            last = train(cfg, data, run, stages=["dpo"], resume=True, show_progress=False).last["dpo"]
        except HuviError as err:  # e.g. every clip label of a small subset is a tie
            print(json.dumps({"run": name, "error": str(err)}))
            continue
        seconds = time.perf_counter() - start
        labels = json.loads((data / "category.json").read_text())["pairs"]
        results[name] = {
            "run": name,
            "labelled_pairs": len(labels),
            "clip_label_pairs": sum(p["winner"] != "tie" for p in labels),
            "labelled_segments": sum(s != "tie" for p in labels for s in p["segments"]),
            "dpo_seconds": round(seconds),
            "held_out_segment": pooled([evaluate_run(run, h, args.samples, False, mode="dense") for h in held_out], "segments"),
            "held_out_clip": pooled([evaluate_run(run, h, args.samples, False, mode="clip") for h in held_out], "pairs"),
            "last_dpo_row": last,
        }
        print(json.dumps(results[name]))
    print("held-out accuracy per segment / per clip pair (0.5 before DPO):")
    for name, row in results.items():
        print(f"  {name:12s} {row['labelled_pairs']:2d} labelled pairs: {row['held_out_segment']['accuracy']:.3f} / {row['held_out_clip']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
