"""Proof that huvi learns preferences about motion, across preferences and seeds, against a control.

For each toy preference in huvi.synthetic.PREFERENCES (a square moving right over left, growing
over shrinking, gliding steadily over shaking) and each seed: a 12-clip category rated by that
preference with a rater's noise (preferred 4-5, other 1-2), one motion stage, then two DPO stages
from it: one on the ratings as given, one on the same clips rated blind to the preference (a
control: huvi.synthetic.blind_ratings rates both clips of a couple alike, so no square comes with
a preferred side and its held-out accuracy should stay near chance). Both are scored by
`evaluate` on two held-out categories of 12 clips made with other seeds, rated by the preference
alone (5 or 1).

    python examples/learn_preferences.py [--preferences direction growth smoothness] [--seeds 1 2 3]
                                         [--jobs 2] [--set key=value ...] [--control blind|shuffled] [--work DIR]

Prints one JSON line per DPO stage, then a table of held-out accuracy per preference, mean ± standard
deviation (min-max) over the seeds, for the rated runs and the controls. `--jobs 2` trains two stages
at a time, one CPU thread each. The tiny preset's defaults are used unless `--set` says otherwise.
Each DPO stage's figures are kept in its run folder (result.json); a rerun with --work reuses them
while the run's settings (its config.yaml) are still the ones asked for.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "examples"))

from sweep import (
    add_control_options,
    add_sweep_options,
    dpo_from_motion,
    motion_overrides,
    motion_stage,
    rate_control,
    reused_result,
    summary,
    sweep_folder,
    worker_init,
)

from huvi.synthetic import PREFERENCES, preference_category

CLIPS, HELD_OUT_SETS = 12, 2


def held_out_seed(seed: int, j: int) -> int:
    return 1000 + 10 * seed + j  # never a training seed


def dpo_stage(motion_run: str, category: str, run: str, held_out: list[str], samples: int, preset: str, overrides: list[str]) -> dict:
    """DPO on `category` from a copy of the motion run, with the DPO settings of `overrides`;
    held-out accuracy and how the stage went (kept in RUN/result.json: a rerun of the sweep reuses it)."""
    from huvi.config import load_config
    from huvi.evaluate import evaluate_run
    from huvi.io import write_json
    from huvi.runs import Run

    cfg = load_config(preset, overrides)  # the motion run's settings plus the DPO ones
    if (done := reused_result(run, cfg)) is not None:
        return done
    seconds = dpo_from_motion(motion_run, category, run, cfg)
    scores = [evaluate_run(Path(run), Path(h), samples=samples, show_progress=False) for h in held_out]
    pairs = sum(s.pairs for s in scores)
    rows = [r for r in Run(Path(run)).read_metrics() if r["stage"] == "dpo"]
    last = rows[-20:]
    result = {
        "held_out_accuracy": round(sum(s.accuracy * s.pairs for s in scores) / pairs, 3),
        "held_out_by_set": [round(s.accuracy, 3) for s in scores],
        "train_accuracy_last20": round(statistics.mean(r["accuracy"] for r in last), 3),
        "loss_min": round(min(r["loss"] for r in rows), 4),
        "loss_last20": round(statistics.mean(r["loss"] for r in last), 4),
        "winner_vs_ref_last20": round(statistics.mean(r["loss_w"] / r["ref_loss_w"] - 1 for r in last), 4),
        "loser_vs_ref_last20": round(statistics.mean(r["loss_l"] / r["ref_loss_l"] - 1 for r in last), 4),
        "health": sorted({sign for r in rows for sign in r.get("health", [])}),
        "best_step": next((r["best_step"] for r in reversed(rows) if "best_step" in r), None),
        "dpo_seconds": round(seconds),
    }
    write_json(Path(run, "result.json"), result)
    return result


def _tag(parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preferences", nargs="+", default=list(PREFERENCES), choices=list(PREFERENCES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="training-category seeds")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    parser.add_argument("--samples", type=int, default=16, help="noise/timestep draws per pair in evaluation")
    add_control_options(parser)
    parser.add_argument("--clips", type=int, default=CLIPS, help="clips of a training category, in couples (held-out sets keep 12)")
    add_sweep_options(parser)
    args = parser.parse_args()
    work = sweep_folder(args.work, "huvi-prefs-")
    kinds = ["rated"] if args.no_control else ["rated", args.control]
    if args.clips < 4 or args.clips % 2:
        parser.error("--clips must be an even number of 4 or more (a category is written in couples)")
    combos = [(p, s) for p in args.preferences for s in args.seeds]
    size = "" if args.clips == CLIPS else f"-{args.clips}clips"  # other training sets, other folders
    keys = {(p, s): f"{p}-{s}{size}" for p, s in combos}
    held_out, motions, dpos = {}, {}, {}
    for preference, seed in combos:
        key = keys[preference, seed]
        held_out[key] = [str(work / f"{key}-held-out-{j}") for j in range(HELD_OUT_SETS)]
        for j, folder in enumerate(held_out[key]):
            if not Path(folder, "category.json").is_file():
                preference_category(Path(folder), preference, clips=CLIPS, seed=held_out_seed(seed, j), size=32, spread=False)
        for kind in kinds:
            if not (work / f"{key}-{kind}" / "category.json").is_file():
                category = preference_category(work / f"{key}-{kind}", preference, clips=args.clips, seed=seed, size=32)
                if kind != "rated":
                    rate_control(category, kind, seed)
    motion_sets = motion_overrides(args.set)  # a sweep over DPO settings reuses the motion stage
    motion_tag, tag = _tag([args.preset, *motion_sets]), _tag([args.preset, *args.set])
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=worker_init) as pool:
        for key in keys.values():
            motions[key] = pool.submit(motion_stage, args.preset, motion_sets, str(work / f"{key}-rated"), str(work / f"{key}-motion-{motion_tag}"))
        for key, future in motions.items():
            future.result()
        for key in keys.values():
            for kind in kinds:
                run = work / f"{key}-{kind}-{tag}"
                dpos[key, kind] = pool.submit(
                    dpo_stage, str(work / f"{key}-motion-{motion_tag}"), str(work / f"{key}-{kind}"), str(run), held_out[key], args.samples, args.preset, args.set
                )
        results = {}
        for (preference, seed), key in keys.items():
            for kind in kinds:
                results[key, kind] = {"preference": preference, "seed": seed, "ratings": kind, "clips": args.clips} | dpos[key, kind].result()
                print(json.dumps(results[key, kind]), flush=True)
    print(f"\nheld-out accuracy, {len(args.seeds)} seeds, {args.clips} training clips, preset {args.preset} {' '.join(args.set)}")
    print("| preference | ratings as given | control (ratings blind to the preference) |")
    print("| --- | --- | --- |")
    for preference in args.preferences:
        cells = []
        for kind in ("rated", args.control):
            values = [r["held_out_accuracy"] for (k, r_kind), r in results.items() if r_kind == kind and r["preference"] == preference]
            cells.append(summary(values) if values else "–")
        print(f"| {preference} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
