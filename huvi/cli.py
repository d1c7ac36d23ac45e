"""`python -m huvi {train,evaluate,check,presets,generate,export,metrics,dense-pairs,bench,make-test-weights}`: the command line over the library.

Bad input ends with one sentence on stderr and exit code 2; a clean stop (Ctrl-C, SIGTERM)
checkpoints and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from huvi.cli_args import build_parser
from huvi.errors import HuviError

if TYPE_CHECKING:
    from huvi.config import HuviConfig

logger = logging.getLogger("huvi")

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 130


def setup_logging(verbose: bool) -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="huggingface_hub")  # deprecation chatter
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Loading weights" bars of every from_pretrained


@contextlib.contextmanager
def gpu_lock_for(out: Path) -> Iterator[None]:
    """The app's GPU lock (huvi.gpu_lock, in $HUVI_RUNS), held while this run trains, so a run from a
    shell and one from the app never share the GPU. Not taken again by a job the app launched (the
    app holds it for the job) nor by the other processes of an `accelerate launch`."""
    from huvi.gpu_lock import GpuLock, held_by_parent, pid_alive
    from huvi.workspace import Workspace

    if held_by_parent() or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    lock = GpuLock(Workspace.from_env().runs, pid_alive)
    with lock.take(f"training {Path(out).name} from a shell, pid {os.getpid()}"):
        yield


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from huvi.config import load_config
    from huvi.precision import default_preset, set_cpu_threads
    from huvi.trainer import train

    stages = ("motion", "dpo") if args.stage == "both" else (args.stage,)
    if args.resume and (args.set or args.steps or args.preset or args.mode):
        raise HuviError("--resume continues a run with the config.yaml it started with; drop --preset, --steps, --mode and --set.")
    overrides = list(args.set or [])
    if args.steps is not None:
        overrides += [f"{stage}.steps={args.steps}" for stage in stages]
    if args.mode is not None:
        overrides.append(f"dpo.mode={args.mode}")
    preset = args.preset or default_preset()
    cfg = load_config(preset, overrides)
    if not args.resume:
        logger.info("preset %s%s", preset, "" if args.preset else " (no --preset given: chosen for this machine)")
        warn_full_size_on_cpu(cfg)
    set_cpu_threads()

    stop = {"requested": False}

    def request_stop(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        logger.warning("stopping after this step (a checkpoint will be written); press Ctrl-C again to abort")

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with gpu_lock_for(args.out), logging_redirect_tqdm():
            result = train(cfg, args.category, args.out, stages=stages, resume=args.resume, should_stop=lambda: stop["requested"])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return EXIT_STOPPED if result.stopped else 0
    for row in result.last.values():
        print(json.dumps(row))
    if result.stopped:
        print(f"Stopped; continue with: python -m huvi train --category {args.category} --out {args.out} --resume", file=sys.stderr)
        return EXIT_STOPPED
    print(next_steps(args.out), file=sys.stderr)
    return 0


def warn_full_size_on_cpu(cfg: HuviConfig) -> None:
    """Say so when a preset built for a GPU is about to train on a CPU (minutes per step, hours per stage)."""
    import torch

    from huvi.catalogue import cpu_config, cpu_preset

    if not cpu_config(cfg) and not torch.cuda.is_available():
        logger.warning(
            "preset %s is for a GPU and there is none here: each step takes minutes on the CPU; use --preset %s to try the flow.",
            cfg.preset, cpu_preset(cfg.model.family),
        )


def next_steps(out: Path) -> str:
    """What a finished `train` says last: where its adapters are, and the commands that use them."""
    from huvi.runs import STAGES, Run

    run = Run(out)
    written = [run.adapter_path(stage).name for stage in STAGES if run.adapter_path(stage).is_file()]
    prompt = run.read_info().get("prompt") or "your prompt"
    name = Path(out).name
    return "\n".join(
        [
            f"Adapters written to {Path(out) / 'adapters'}: {', '.join(written)}.",
            "Next:",
            f"  python -m huvi generate --run {shlex.quote(str(out))} --prompt {shlex.quote(prompt)} --compare --out {shlex.quote(str(Path(out) / 'samples' / 'clip.mp4'))}",
            f"  python -m huvi export --run {shlex.quote(str(out))} --out {shlex.quote(str(Path(out) / 'export' / f'{name}.safetensors'))} --zip",
        ]
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from huvi.evaluate import evaluate_run

    scores = evaluate_run(args.run, args.category, samples=args.samples, mode=args.mode)
    print(json.dumps(scores.as_dict()))
    return 0


def cmd_dense_pairs(args: argparse.Namespace) -> int:
    from huvi.dense import make_aligned_pairs

    for pair in make_aligned_pairs(args.run, args.category, args.clips, args.eta, args.seed, args.segments):
        print(json.dumps(pair.to_json()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from huvi.category import check_category
    from huvi.config import load_config
    from huvi.families import frames_per_latent
    from huvi.precision import default_preset

    cfg = load_config(args.preset or default_preset())
    if args.clips:
        files = _files(args.clips)
        if not files:
            raise HuviError(f"There are no files in {' '.join(map(str, args.clips))} to check; give clip files or a folder holding them.")
        failed = _check_clips(files, cfg)
        if failed:
            print(f"{failed} of {len(files)} files cannot be added as clips.", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"All {len(files)} files can be added as clips for preset {cfg.preset}.")
        return 0
    problems = check_category(args.category, cfg.data, frames_per_latent(cfg.model))
    for problem in problems:
        print(f"{problem.level}: {problem.message}")
    errors = sum(p.level == "error" for p in problems)
    if args.category.is_dir() and not (args.category / "category.json").is_file():
        clip_dir = args.category / "clips"  # not a category (yet): say what each of its files would get
        errors += _check_clips(_files([clip_dir if clip_dir.is_dir() else args.category]), cfg)
    if errors:
        print(f"{args.category}: {errors} problem(s) to fix before training.", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.category}: ready to train with preset {cfg.preset}.")
    return 0


def _files(paths: list[Path]) -> list[Path]:
    """The given files, a folder standing for the (non-hidden) entries in it that are not folders
    (a broken link among them is reported as not found)."""
    return [f for p in paths for f in (sorted(c for c in p.iterdir() if not c.is_dir() and not c.name.startswith(".")) if p.is_dir() else [p])]


def _check_clips(files: list[Path], cfg: HuviConfig) -> int:
    """Print "ok: ..." or "error: <sentence>" for each file as a clip for `cfg`; returns how many failed."""
    from huvi.workspace import check_clip

    failed = 0
    for path in files:
        try:
            kept = check_clip(path, cfg.data)
            print(f"ok: {path.name}: {kept} frames at stride {cfg.data.stride} fit preset {cfg.preset}.")
        except HuviError as err:
            print(f"error: {err}")
            failed += 1
    return failed


def cmd_presets(args: argparse.Namespace) -> int:
    from huvi.catalogue import catalogue, family_title
    from huvi.precision import default_preset

    entries, default = catalogue(), default_preset()
    rows = [(family_title(e.family), e.name, e.tier, e.summary + ("  (this machine's default)" if e.name == default else "")) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)), row[3], sep="  ")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from huvi.generate import GenerateRequest, generate

    request = GenerateRequest(
        prompt=args.prompt,
        first_frame=args.first_frame,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        dpo_scale=args.dpo_scale,
        motion_scale=args.motion_scale,
        compare=args.compare,
    )
    result = generate(args.run, request, args.out)
    print(json.dumps({k: str(v) for k, v in vars(result).items() if v is not None}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from huvi.export import export_run

    result = export_run(args.run, args.format, args.out, merge=args.merge)
    line = {"files": [str(f) for f in result.files], "card": str(result.card)}
    if args.zip:
        from huvi.bundle import bundle_export

        line["zip"] = str(bundle_export(result, args.run, Path(args.out).with_suffix(".zip")))
    print(json.dumps(line))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from huvi.metrics import CLIP_MODEL, ClipScorer, video_metrics
    from huvi.video import read_clip

    scorer = None
    if args.prompt is not None:
        scorer = ClipScorer.load_local(args.clip_model)
        if scorer is None:
            logger.warning("CLIP model %s is not on this machine: CLIP scores are skipped (fetch it with `hf download %s`).", args.clip_model, CLIP_MODEL)
    failed = 0
    for path in args.videos:
        try:
            frames = read_clip(path, None, None)
            print(json.dumps(video_metrics(path, frames, args.prompt, scorer)))
        except HuviError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return EXIT_BAD_INPUT if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from huvi.bench import BenchRequest, run

    if args.steps < 1 or args.warmup < 0:
        raise HuviError("--steps must be at least 1 and --warmup 0 or more.")
    request = BenchRequest(
        presets=[args.preset] if args.preset else [],
        all_presets=args.all_presets,
        stage=args.stage,
        steps=args.steps,
        warmup=args.warmup,
        naive=args.naive,
        estimate=args.estimate,
        load=args.load,
        overrides=list(args.set or []),
        peak_tflops=args.peak_tflops,
        profile=args.profile,
    )
    out = args.json_out.open("w", encoding="utf-8") if args.json_out else None

    def emit(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    try:
        run(request, emit)
    finally:
        if out is not None:
            out.close()
    return 0


def cmd_make_test_weights(args: argparse.Namespace) -> int:
    from huvi.catalogue import cpu_config
    from huvi.config import load_config, preset_names
    from huvi.families import family_for

    configs = [load_config(name) for name in args.preset or preset_names()]
    if not args.preset:  # every GPU preset of the family
        configs = [cfg for cfg in configs if cfg.model.family == args.family and not cpu_config(cfg)]
    models: dict[str, list[str]] = {}  # the models' weight sources -> the presets that use them
    for cfg in configs:
        if cpu_config(cfg):
            raise HuviError(
                f"Preset {cfg.preset} is a CPU preset whose model is built in code or ships with huvi; make-test-weights writes the GPU presets' models."
            )
        family = family_for(cfg.model)
        models.setdefault(json.dumps([family.name, family.weight_sources()]), []).append(cfg.preset)
    for presets in models.values():
        written = family_for(load_config(presets[0]).model).write_test_weights(args.dir, seed=args.seed, force=args.force)
        print(json.dumps(written | {"presets": presets}), flush=True)  # one line per model, its --set values
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "check": cmd_check,
    "presets": cmd_presets,
    "generate": cmd_generate,
    "export": cmd_export,
    "metrics": cmd_metrics,
    "dense-pairs": cmd_dense_pairs,
    "bench": cmd_bench,
    "make-test-weights": cmd_make_test_weights,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except HuviError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
