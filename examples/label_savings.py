"""DenseDPO's label savings, measured on a toy: segment labels on a third of the pairs against clip
labels on all of them, over several seeds, each against a control with labels blind to the defect.

The toy (huvi.synthetic.defect_category): explicit pairs of two copies of one moving square that
differ only by a short defect in some of their 4 segments of 2 frames, by default a smear local to
the square (its last frame in the segment is the mean of its neighbours: a ghost trail over a small
share of the frame). Each pair is labelled per segment (the clip without the defect where only one
has it) and per clip (the one with fewer defective segments; a tie when they have as many, which
teaches clip-level DPO nothing), so a clip label blurs which part was bad.

Per seed: one motion stage on the clean rated clips (the same for every run of the seed), then DPO
stages from it: clip labels on all the pairs (dpo.mode=clip), segment labels on the first third
(dpo.mode=dense), and each again with shuffled labels (huvi.synthetic.shuffled_labels: half of the
labels, chosen at random, name the other clip: a control that should stay near chance). Each is
scored on two held-out categories made with other seeds, per labelled segment (`evaluate --mode
dense`) and per pair with a clip-level winner (`evaluate --mode clip`).

    python examples/label_savings.py [--seeds 1 2 3 4 5] [--pairs 12] [--defect smear] [--variation 0]
                                     [--jobs 2] [--settings NAME ...] [--set key=value ...] [--work DIR]

--variation N gives each copy its own noise of N grey levels everywhere (training and held-out
pairs), as DenseDPO's aligned pairs differ everywhere a little; without it a pair's copies differ only
in their defects, and a clip label already points at the differing segments.

Prints one JSON line per DPO stage, then held-out accuracy per setting, mean ± standard deviation
(min-max) over the seeds. `--settings` picks the settings: clip-all and segment-third (the default:
the claim), clip-third (what clip labels reach on the pairs segment labels get: the saving, if
any) and segment-all. Each stage's figures are kept in its run folder (result.json); a rerun with
--work reuses them while the run's settings (its config.yaml) are still the ones asked for.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "examples"))

from sweep import add_sweep_options, dpo_from_motion, motion_stage, reused_result, summary, sweep_folder, worker_init

from huvi.io import write_json
from huvi.synthetic import DEFECTS, defect_category, shuffled_labels

HELD_OUT_SETS = 2
# The toy's clips are 8 frames at stride 3 (huvi.synthetic.defect_category's defaults), the tiny preset's
# geometry when the README's table was measured, as was its drift guard (0.003; the preset's is 0.01 since)
MEASURED_WITH = ["data.frames=8", "data.stride=3", "data.max_cached_frames=10", "dpo.drift_weight=0.003"]
SETTINGS = {  # option: (name, dpo.mode, share of the pairs)
    "clip-all": ("clip labels, all pairs", "clip", 1.0),
    "segment-third": ("segment labels, a third", "dense", 1 / 3),
    "clip-third": ("clip labels, a third", "clip", 1 / 3),
    "segment-all": ("segment labels, all pairs", "dense", 1.0),
}


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


def dpo_stage(motion_run: str, category: str, run: str, mode: str, held_out: list[str], samples: int, overrides: list[str]) -> dict:
    """DPO in `mode` on `category` from a copy of the motion run; held-out accuracy per segment and per pair."""
    from huvi.config import load_config
    from huvi.evaluate import evaluate_run

    cfg = load_config("tiny", [*overrides, f"dpo.mode={mode}"])
    if (done := reused_result(run, cfg)) is not None:
        return done
    seconds = dpo_from_motion(motion_run, category, run, cfg)
    labels = json.loads(Path(category, "category.json").read_text())["pairs"]
    result = {"labelled_pairs": len(labels), "dpo_seconds": round(seconds)}
    for unit, scoring in (("segment", "dense"), ("pair", "clip")):
        scores = [evaluate_run(Path(run), Path(h), samples, False, mode=scoring) for h in held_out]
        counts = [s.segments if unit == "segment" else s.pairs for s in scores]
        result[f"held_out_{unit}"] = round(sum(s.accuracy * c for s, c in zip(scores, counts)) / sum(counts), 3)
        result[f"held_out_{unit}s"] = sum(counts)
    write_json(Path(run, "result.json"), result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="training-category seeds")
    parser.add_argument("--pairs", type=int, default=12, help="labelled pairs of each training category")
    parser.add_argument("--defect", default="smear", choices=list(DEFECTS))
    parser.add_argument("--variation", type=float, default=0.0, help="grey levels of each copy's own noise everywhere (0: copies alike outside the defect)")
    parser.add_argument("--samples", type=int, default=8, help="noise/timestep draws per pair in evaluation")
    parser.add_argument("--settings", nargs="+", default=["clip-all", "segment-third"], choices=list(SETTINGS), help="which labels on how many pairs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a tiny-preset setting")
    add_sweep_options(parser)
    args = parser.parse_args()
    overrides = [*MEASURED_WITH, *args.set]
    work = sweep_folder(args.work, "huvi-label-savings-")
    settings = {SETTINGS[key][0]: SETTINGS[key][1:] for key in args.settings}  # name: (dpo.mode, share)
    kinds = ("labels", "shuffled")
    tag = f"{args.defect}-{args.pairs}" + (f"-v{args.variation:g}" if args.variation else "")
    categories, held_out = {}, {}
    for seed in args.seeds:
        full = work / f"{tag}-{seed}-train"
        if not (full / "category.json").is_file():
            defect_category(full, args.defect, pairs=args.pairs, seed=seed, variation=args.variation)
        held_out[seed] = [str(work / f"{tag}-{seed}-held-out-{j}") for j in range(HELD_OUT_SETS)]
        for j, folder in enumerate(held_out[seed]):
            if not Path(folder, "category.json").is_file():
                defect_category(Path(folder), args.defect, pairs=12, seed=100 + 10 * seed + j, variation=args.variation)
        for name, (_, share) in settings.items():
            for kind in kinds:
                folder = work / f"{tag}-{seed}-{round(share * 100)}-{kind}"
                if not (folder / "category.json").is_file():
                    keep_pairs(full, folder, max(1, round(args.pairs * share)))
                    if kind == "shuffled":
                        shuffled_labels(folder, seed)
                categories[seed, name, kind] = folder
    results: dict[tuple[int, str, str], dict] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=worker_init) as pool:
        motions = {seed: pool.submit(motion_stage, "tiny", overrides, str(work / f"{tag}-{seed}-train"), str(work / f"{tag}-{seed}-motion")) for seed in args.seeds}
        for future in motions.values():
            future.result()
        futures = {
            (seed, name, kind): pool.submit(
                dpo_stage, str(work / f"{tag}-{seed}-motion"), str(categories[seed, name, kind]),
                str(work / f"{tag}-{seed}-run-{mode}-{round(share * 100)}-{kind}"), mode, held_out[seed], args.samples, overrides,
            )
            for seed in args.seeds for name, (mode, share) in settings.items() for kind in kinds
        }  # fmt: skip
        for (seed, name, kind), future in futures.items():
            results[seed, name, kind] = {"seed": seed, "setting": name, "labels": kind} | future.result()
            print(json.dumps(results[seed, name, kind]), flush=True)
    print(f"\nheld-out accuracy, {args.defect} toy, {args.pairs} pairs, seeds {' '.join(map(str, args.seeds))} {' '.join(args.set)}")
    print("| setting | labelled pairs | per segment | per pair | control per segment | control per pair |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in settings:
        rows = {kind: [r for (s, n, k), r in results.items() if n == name and k == kind] for kind in kinds}
        cells = [summary([r[f"held_out_{unit}"] for r in rows[kind]]) for kind in kinds for unit in ("segment", "pair")]
        print(f"| {name} | {rows['labels'][0]['labelled_pairs']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
