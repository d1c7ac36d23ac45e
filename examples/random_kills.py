"""Kill `python -m huvi train` with SIGKILL at random moments, resume it, and compare the result
with an uninterrupted run of the same config.

A synthetic category (the tests' six sliding squares) is trained once without interruption, then
`--trials` more times; in each trial the process is killed after a random delay, drawn uniformly
from the start of the process to the reference run's wall time, up to `--kills` times, and
resumed with `--resume` after each kill (started afresh when the kill came before config.yaml was
written: there is nothing to resume then, as the app says too). Each finished trial is compared
with the reference: every metrics row (without its step time) and both adapters, tensor for tensor.

    python examples/random_kills.py [--trials 5] [--kills 3] [--seed 0] [--work DIR] [--set key=value ...]

Prints one line per kill and per trial, and a summary; exits 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from huvi.jobs import TrainRequest, resume_argv, train_argv
from huvi.runs import Run
from huvi.synthetic import direction_category

REPO = Path(__file__).resolve().parent.parent
# short stages with a checkpoint every step: a kill can land before, inside or after any of them
SETTINGS = ["motion.steps=4", "dpo.steps=4", "motion.checkpoint_every=1", "dpo.checkpoint_every=1", "log_every=1"]


def train_command(category: Path, out: Path, overrides: list[str], resume: bool) -> list[str]:
    """The command the app runs to start (or resume) this run."""
    return resume_argv(category, out) if resume else train_argv(TrainRequest(category, out, "tiny", tuple(overrides)))


def run(argv: list[str], kill_after: float | None = None) -> tuple[int | None, float]:
    """Run `argv`; SIGKILL it after `kill_after` seconds if it is still running. Returns (exit
    code, None when killed; seconds it ran)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, time.monotonic() - start
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{log.read().decode()}")
    return proc.returncode, time.monotonic() - start


def outcome(out: Path) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    rows = Run(out).read_metrics()
    adapters = {p.stem: load_file(str(p)) for p in sorted((out / "adapters").glob("*.safetensors"))}
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows], adapters


def differences(reference, result) -> list[str]:
    (ref_rows, ref_adapters), (rows, adapters) = reference, result
    found = []
    if rows != ref_rows:
        first = next((i for i, (a, b) in enumerate(zip(rows, ref_rows)) if a != b), min(len(rows), len(ref_rows)))
        found.append(f"metrics differ from row {first + 1} ({len(rows)} rows, reference {len(ref_rows)})")
    if set(adapters) != set(ref_adapters):
        found.append(f"adapters {sorted(adapters)} instead of {sorted(ref_adapters)}")
    for name in set(adapters) & set(ref_adapters):
        a, b = adapters[name], ref_adapters[name]
        if set(a) != set(b) or any(not torch.equal(a[k], b[k]) for k in a):
            found.append(f"adapter {name} differs")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--kills", type=int, default=3, help="most kills per trial (each trial draws 1 to this many)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, help="folder for the category and runs (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more tiny-preset settings")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="huvi-kills-"))
    category = direction_category(work / "squares", clips=6, seed=0, frames=32, size=32)
    overrides = SETTINGS + args.set

    _, wall = run(train_command(category, work / "reference", overrides, resume=False))
    reference = outcome(work / "reference")
    print(f"reference run: {wall:.1f} s, {len(reference[0])} metrics rows, adapters {sorted(reference[1])}")

    failed = 0
    for trial in range(1, args.trials + 1):
        out = work / f"trial-{trial}"
        kills = rng.randint(1, args.kills)
        for k in range(kills + 1):
            delay = rng.uniform(0.0, wall) if k < kills else None
            resume = Run(out).exists()
            if not resume and out.exists():
                shutil.rmtree(out)  # killed before config.yaml: nothing to resume, start again
            code, seconds = run(train_command(category, out, overrides, resume), kill_after=delay)
            rows = len(Run(out).read_metrics())
            what = "killed" if code is None else "finished"
            print(f"  trial {trial}: {'resumed' if resume else 'started'}, {what} after {seconds:.1f} s ({rows} metrics rows on disk)")
            if code is not None:
                break
        found = differences(reference, outcome(out))
        failed += bool(found)
        print(f"trial {trial}: {kills} kill(s), " + ("; ".join(found) if found else "same metrics and adapters as the reference"))
    print(f"{args.trials - failed} of {args.trials} killed runs resumed to the reference's metrics and adapters")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
