"""Does DPO change what the model generates? The share of generated clips that show a rated motion
preference, without and with the DPO adapter, for a rated run and a control.

Per seed: a 12-clip category rated by a toy preference (huvi.synthetic.preference_category, a
rater's noise on the ratings; with --toy shapes the demo model's own kind of clips rated for
moving right, huvi.demo_data.direction_couples), one motion stage, then two DPO stages from it: one
on the ratings as given, one on ratings blind to the preference (a control:
huvi.synthetic.blind_ratings rates both clips of a couple alike). Each DPO run generates K clips
from the first frames of a held-out category made with other seeds, with that category's prompt,
each twice with the same seed: without the DPO adapter (the motion-only model, DPO's reference)
and with it. On squares the held-out clips come in couples
(both sides of the preference equally); on shapes every held-out shape starts in the middle of the
frame, with room to move either way (`centred_starts`).
huvi.track follows the main object in every clip; a clip shows the preference when the object is
kept in every frame (`object_kept`) and its motion shows the preferred side (`shows_preference`:
moving right, growing, gliding steadily).

    python examples/preference_in_samples.py [--preset demo] [--preference direction] [--seeds 1]
                                             [--clips 32] [--toy squares] [--set key=value ...]
                                             [--control blind|shuffled] [--no-control] [--jobs 2] [--work DIR]
    python examples/preference_in_samples.py --toy shapes --clips 96 --runs runs/mine runs/mine-control

The second form trains nothing: it samples runs already trained (a category of your own rated in the
app, or trained with `python -m huvi train`, and a control rated blind to the preference), one table
row each, from the held-out first frames of the first --seeds.

Prints one JSON line per DPO run (`flips`: how many clips DPO turned to the preferred side, and how
many away from it; `flips_p`: a two-sided sign test on them, `sign_test`), then a table per run kind:
the share of clips showing the preference without and with DPO and the change in points (mean ±
standard deviation over the seeds), the share of clips in which the object was kept in every frame,
and of those the share showing the preference (the preference apart from how often the object
survives, which DPO on the demo model changes for a control as much as for a rated run: docs/LEARNING.md),
the seeds whose flips are beyond chance, and all seeds' flips together. A rated run should move the
share up (issue 15's goal: +30 points or more), the control should leave it within ±10.
The models must generate clips with a trackable object for the figures to mean anything: the tiny
preset's random weights generate colour noise, so on it the script only checks its own plumbing.
Each DPO run's figures are kept in its folder (samples-HELD_OUT.json) and reused by a rerun with --work.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "examples"))

import numpy as np
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

from huvi.demo_data import direction_couples, shape_clip
from huvi.io import write_json
from huvi.synthetic import PREFERENCES, preference_category
from huvi.video import write_clip

CLIPS = 12  # rated clips of a training category, as learn_preferences.py


def centred_starts(root: Path, clips: int, seed: int, size: int, prompt: str = "a shape moving") -> Path:
    """Held-out first frames for --toy shapes: a category of `clips` clips of the demo model's kind
    (huvi.demo_data.shape_clip of seed * 1000 + k), each shape starting in the middle along a
    left-right path, so that it has room to move either way; only their first frames are used, and
    every clip is rated 3. Starts drawn as in training clips keep the whole path inside the frame,
    so a shape near the right edge can only move left: from those first frames (seed 2, 21 of its
    32) the motion model already moved 9 of the 11 shapes that start on the left to the right, and
    none of the 10 that start on the right, with DPO or without: little was left for DPO to change."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = {}
    for k in range(clips):
        name = f"start_{seed}_{k:02d}.mp4"
        direction = str(rng.choice(["right", "left"]))  # the clip's own motion: only frame 0 is read
        write_clip(root / "clips" / name, shape_clip(seed * 1000 + k, 8, size, direction=direction, centred=True).frames)
        scores[name] = 3
    write_json(root / "category.json", {"prompt": prompt, "scores": scores})
    return root


def first_frames(category: Path, width: int, height: int) -> tuple[list, str]:
    """Frame 0 of every clip of `category`, (H, W, 3) uint8 each, in name order, and its prompt."""
    from huvi.video import read_clip

    meta = json.loads((category / "category.json").read_text())
    return [read_clip(category / "clips" / name, width, height, max_frames=1)[0] for name in sorted(meta["scores"])], meta["prompt"]


def sample_shares(run: str, held_out: str, preference: str) -> dict:
    """Generate from every first frame of `held_out` without and with the DPO adapter (seed = the
    clip's index); the share of clips showing `preference` and of clips whose object is tracked
    (huvi.track.object_kept: found in every frame at a plausible size; only those can show it)."""
    import torch

    from huvi.adapters import DPO, MOTION
    from huvi.generate import RunModel
    from huvi.track import motion_stats, object_kept, shows_preference

    model = RunModel(Path(run), torch.device("cpu"))
    frames, prompt = first_frames(Path(held_out), model.cfg.data.width, model.cfg.data.height)
    text, uncond = model.encode_prompt(prompt), model.encode_prompt(model.cfg.generate.negative_prompt)
    counts = {name: {"preferred": 0, "tracked": 0} for name in ("without_dpo", "with_dpo")}
    flips = {"to_preferred": 0, "from_preferred": 0}  # clips whose outcome DPO changed, each way
    with torch.no_grad():
        for seed, frame in enumerate(frames):
            first = model.encode_frames(frame[None])[:, 0]  # (c, h, w)
            shown = {}
            for name, dpo in (("without_dpo", 0.0), ("with_dpo", 1.0)):
                clip = model.sample({MOTION: 1.0, DPO: dpo}, first, text, uncond, seed, show_progress=False)
                kept = object_kept(clip)
                shown[name] = kept and shows_preference(preference, motion_stats(clip))
                counts[name]["preferred"] += shown[name]
                counts[name]["tracked"] += kept
            flips["to_preferred"] += shown["with_dpo"] and not shown["without_dpo"]
            flips["from_preferred"] += shown["without_dpo"] and not shown["with_dpo"]
    shares = {f"{key}_{name}": round(count[key] / len(frames), 3) for name, count in counts.items() for key in ("preferred", "tracked")}
    change = round(100 * (shares["preferred_with_dpo"] - shares["preferred_without_dpo"]), 1)
    return {"clips": len(frames), "prompt": prompt} | shares | {"change_points": change, "flips": flips}


def sign_test(to_preferred: int, from_preferred: int) -> float:
    """Two-sided exact sign test on the clips DPO changed: the chance of flips at least this
    lopsided if each changed clip were as likely to turn either way (no pull toward the preference).
    A K-clip share moves in steps of 1/K: from 32 clips, a dozen flips that each went either way at
    random move it by about 11 points (sd, sqrt(12) / 32)."""
    n, low = to_preferred + from_preferred, min(to_preferred, from_preferred)
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(low + 1)) / 2**n) if n else 1.0


def kept_samples(run: str, held_out: str, preference: str) -> dict:
    """`sample_shares`, kept in RUN/samples-HELD_OUT.json (HELD_OUT the held-out folder's name) and
    read back on a rerun, unless the DPO adapter was written after it (a run trained on)."""
    from huvi.runs import Run

    done = Path(run, f"samples-{Path(held_out).name}.json")
    if done.is_file() and done.stat().st_mtime >= Run(Path(run)).adapter_path("dpo").stat().st_mtime:
        return json.loads(done.read_text())
    result = sample_shares(run, held_out, preference)
    write_json(done, result)
    return result


def dpo_and_samples(motion_run: str, category: str, run: str, held_out: str, preference: str, preset: str, overrides: list[str]) -> dict:
    """DPO on `category` from a copy of the motion run, then `kept_samples`."""
    from huvi.config import load_config

    cfg = load_config(preset, overrides)
    if reused_result(run, cfg) is None:
        seconds = dpo_from_motion(motion_run, category, run, cfg)
        write_json(Path(run, "result.json"), {"dpo_seconds": round(seconds)})
    return kept_samples(run, held_out, preference)


def print_table(title: str, groups: dict[str, list[dict]]) -> None:
    """One markdown row per group of runs (the seeds of a run kind, or one given run): the shares
    without and with DPO as mean ± sd, how often the object was kept, and the flips."""
    print(f"\n{title}")
    print(
        "| ratings | without DPO | with DPO | change (points) | object kept in every frame, without / with | of those, showing it, without / with "
        "| runs moved beyond chance (sign test on the flips, p < 0.05) | all runs' flips, to / from the preference (p) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, rows in groups.items():
        cells = [summary([r[k] for r in rows]) for k in ("preferred_without_dpo", "preferred_with_dpo", "change_points")]
        kept = {side: statistics.mean(r[f"tracked_{side}"] for r in rows) for side in ("without_dpo", "with_dpo")}
        # the preference itself, apart from how often the object survives (which a control moves too)
        of_kept = {side: statistics.mean(r[f"preferred_{side}"] for r in rows) / kept[side] if kept[side] else float("nan") for side in kept}
        beyond = [str(r.get("seed", r.get("run"))) for r in rows if r["flips_p"] < 0.05]
        to, away = (sum(r["flips"][side] for r in rows) for side in ("to_preferred", "from_preferred"))
        print(
            f"| {label} | {' | '.join(cells)} | "
            f"{kept['without_dpo']:.2f} / {kept['with_dpo']:.2f} | {of_kept['without_dpo']:.2f} / {of_kept['with_dpo']:.2f} | "
            f"{len(beyond)} of {len(rows)} ({' '.join(beyond) or 'none'}) | {to} / {away} ({sign_test(to, away):.2g}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--preference", default="direction", choices=list(PREFERENCES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="training-category seeds")
    parser.add_argument("--clips", type=int, default=32, help="held-out first frames, each sampled without and with DPO (even)")
    parser.add_argument(
        "--toy", default="squares", choices=("squares", "shapes"),
        help="squares: huvi.synthetic's; shapes: the demo model's own kind of clips (huvi.demo_data.direction_couples, direction only)",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    parser.add_argument(
        "--runs", nargs="+", type=Path, metavar="RUN",
        help="sample these finished runs instead of training (say a category and its control trained in the app or with "
        "`python -m huvi train`): one table row each, from the held-out first frames of the first --seeds",
    )  # fmt: skip
    add_control_options(parser)
    add_sweep_options(parser)
    args = parser.parse_args()
    if args.clips < 2 or args.clips % 2:
        parser.error("--clips must be an even number of 2 or more (the held-out clips come in couples)")
    if args.toy == "shapes" and args.preference != "direction":
        parser.error("--toy shapes rates direction only")
    from huvi.config import load_config
    from huvi.runs import Run

    for run in args.runs or ():
        if not Run(run).adapter_path("dpo").is_file():
            parser.error(f"{run} holds no DPO adapter: train the run to the end first (python -m huvi train --category ... --out {run}).")
    data = Run(args.runs[0]).read_config().data if args.runs else load_config(args.preset, args.set).data
    work = sweep_folder(args.work, "huvi-samples-")
    kinds = ("rated",) if args.no_control else ("rated", args.control)
    held_out_name = f"{'centred-starts' if args.toy == 'shapes' else 'first-frames'}-{args.clips}"

    def at(seed: int, name: str) -> str:
        """A folder of the sweep: categories, runs and held-out first frames of one seed."""
        return str(work / f"{'shapes-' if args.toy == 'shapes' else ''}{args.preference}-{seed}-{name}")

    def write_category(root: Path, clips: int, seed: int, spread: bool = True) -> Path:
        if args.toy == "shapes":
            return direction_couples(root, clips, seed, size=data.width, spread=spread)
        return preference_category(root, args.preference, clips=clips, seed=seed, size=data.width, spread=spread)

    def held_out(seed: int) -> str:
        """The held-out first frames of `seed`, written on first use."""
        folder = Path(at(seed, held_out_name))
        if not (folder / "category.json").is_file():
            if args.toy == "shapes":
                centred_starts(folder, args.clips, 2000 + seed, data.width)
            else:
                write_category(folder, args.clips, 2000 + seed, spread=False)
        return str(folder)

    if args.runs:
        sample_runs(args.runs, held_out(args.seeds[0]), args)
        return
    for seed in args.seeds:
        held_out(seed)
        for kind in kinds:
            if not Path(at(seed, kind), "category.json").is_file():
                category = write_category(Path(at(seed, kind)), CLIPS, seed)
                if kind != "rated":
                    rate_control(category, kind, seed)
    motion_sets = motion_overrides(args.set)  # a sweep over DPO settings reuses the motion stage
    results: dict[tuple[int, str], dict] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=worker_init) as pool:
        motions = [pool.submit(motion_stage, args.preset, motion_sets, at(seed, "rated"), at(seed, "motion")) for seed in args.seeds]
        for future in motions:
            future.result()
        futures = {
            (seed, kind): pool.submit(
                dpo_and_samples, at(seed, "motion"), at(seed, kind), at(seed, f"{kind}-run"), held_out(seed),
                args.preference, args.preset, args.set,
            )
            for seed in args.seeds for kind in kinds
        }  # fmt: skip
        for (seed, kind), future in futures.items():
            results[seed, kind] = with_sign_test({"preference": args.preference, "seed": seed, "ratings": kind} | future.result())
            print(json.dumps(results[seed, kind]), flush=True)
    print_table(
        f"{args.preference}: share of {args.clips} generated clips showing it, preset {args.preset}, seeds {' '.join(map(str, args.seeds))} {' '.join(args.set)}",
        {"as given" if kind == "rated" else f"control ({kind})": [r for (_, k), r in results.items() if k == kind] for kind in kinds},
    )


def with_sign_test(result: dict) -> dict:
    """`result` with `flips_p`, the sign test on its flips."""
    return result | {"flips_p": round(sign_test(**result["flips"]), 4)}


def sample_runs(runs: list[Path], held_out: str, args: argparse.Namespace) -> None:
    """--runs: `kept_samples` of each finished run, one JSON line and one table row each."""
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=worker_init) as pool:
        futures = {run: pool.submit(kept_samples, str(run), held_out, args.preference) for run in runs}
        results = {run: with_sign_test({"preference": args.preference, "run": str(run)} | future.result()) for run, future in futures.items()}
    for result in results.values():
        print(json.dumps(result), flush=True)
    print_table(
        f"{args.preference}: share of {args.clips} generated clips showing it, from {Path(held_out).name} (seed {args.seeds[0]})",
        {run.name: [result] for run, result in results.items()},
    )


if __name__ == "__main__":
    main()
