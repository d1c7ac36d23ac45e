"""`python -m huvi {train,evaluate,check,generate,export,metrics,dense-pairs,bench,make-test-weights}`: the command line over the library.

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
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
    # bitsandbytes (imported for 8-bit AdamW) tries to load optional CPU kernels from the Hub at import
    # and warns when it cannot, on every run; huvi needs none of them.
    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


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

    if cfg.model.source != "tiny" and not torch.cuda.is_available():
        logger.warning(
            "preset %s is for a GPU and there is none here: each step takes minutes on the CPU; use --preset tiny to try the flow.", cfg.preset
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
    problems = check_category(args.category, cfg.data)
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
    from huvi.full_size import write_test_weights

    weights = write_test_weights(args.dir, seed=args.seed, force=args.force)
    print(json.dumps({"base": str(weights.base), "motion_adapter": str(weights.motion_adapter), "set": weights.overrides}))
    return 0


EXAMPLES = {
    "train": """examples:
  python -m huvi train --category data/demo --out runs/demo
  python -m huvi train --category data/guitar --out runs/guitar --preset sd15-24gb --set dpo.beta=2500
  python -m huvi train --category data/guitar --out runs/guitar-quick --steps 50 --set generate.preview_every=25
  python -m huvi train --category data/guitar --out runs/guitar --resume          # after a stop or a crash
  python -m huvi train --category data/guitar --out runs/guitar-dense --mode dense --stage motion

A finished run holds RUN/adapters/motion.safetensors and dpo.safetensors; `generate` and `export` use them.""",
    "evaluate": """examples:
  python -m huvi evaluate --run runs/demo --category data/demo
  python -m huvi evaluate --run runs/guitar --category data/guitar-held-out --samples 32
  python -m huvi evaluate --run runs/guitar-dense --category data/guitar --mode dense""",
    "check": """examples:
  python -m huvi check --category data/guitar
  python -m huvi check --category data/guitar --preset sd15-12gb
  python -m huvi check --clips ~/Videos/guitar/*.mp4
  python -m huvi check --clips ~/Videos/guitar""",
    "generate": """examples:
  python -m huvi generate --run runs/demo --prompt "a square sliding across the frame" --out out/clip.mp4
  python -m huvi generate --run runs/guitar --prompt "a person playing guitar" --first-frame photo.jpg --seed 3 --compare --out out/guitar.mp4
  python -m huvi generate --run runs/guitar --prompt "a person playing guitar" --dpo-scale 0.5 --steps 30 --out out/half.gif""",
    "export": """examples:
  python -m huvi export --run runs/demo --out out/demo.safetensors                      # DPO + demo.motion.safetensors
  python -m huvi export --run runs/demo --merge --out out/demo-merged.safetensors --zip # one file, then one zip with its card
  python -m huvi export --run runs/demo --format kohya --merge --out out/kohya/demo.safetensors
  python -m huvi export --run runs/demo --format comfy-motion --merge --out out/comfy/demo.safetensors""",
    "metrics": """examples:
  python -m huvi metrics out/clip.mp4 out/clip.nodpo.mp4
  python -m huvi metrics out/clip.mp4 --prompt "a person playing guitar" --clip-model ~/models/clip-vit-large-patch14""",
    "dense-pairs": """examples:
  python -m huvi dense-pairs --run runs/guitar --category data/guitar
  python -m huvi dense-pairs --run runs/guitar --category data/guitar --clips a.mp4 b.mp4 --eta 0.6 --seed 1 --segments 4""",
    "bench": """examples:
  python -m huvi bench --preset tiny --steps 3
  python -m huvi bench --preset sd15-24gb --stage both --naive --json-out docs/bench.jsonl
  python -m huvi bench --all-presets --estimate
  python -m huvi bench --preset sd15-24gb --load""",
    "make-test-weights": """examples:
  python -m huvi make-test-weights /tmp/huvi-weights
  python -m huvi make-test-weights /tmp/huvi-weights --seed 1 --force""",
}


def _command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose --help ends with its examples."""
    description = textwrap.fill(description or help[0].upper() + help[1:] + ".", width=100)
    return sub.add_parser(name, help=help, description=description, epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m huvi", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="`python -m huvi COMMAND --help` explains a command's options, with examples.\n\n"
        "quick start:\n  python -m huvi check --category data/demo\n  python -m huvi train --category data/demo --out runs/demo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub, "train", "train the motion and/or DPO adapter of a category",
        "Train a category's motion LoRA on its clips, then its Diffusion-DPO LoRA on the preference pairs its ratings form. "
        "Ctrl-C (or SIGTERM) stops after the current step with a checkpoint; --resume continues from it.",
    )
    p.add_argument("--category", type=Path, required=True, help="category folder (category.json + clips/)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create (or continue with --resume)")
    p.add_argument("--preset", help="preset name from presets/ or a YAML path (default: sd15-24gb with a GPU, tiny without)")
    p.add_argument(
        "--stage", choices=("motion", "dpo", "both"), default="both",
        help="which adapter to train: motion (on the clips), dpo (needs the run's motion adapter) or both in turn (default)",
    )
    p.add_argument("--steps", type=int, metavar="N", help="steps of each selected stage (overrides the preset's motion.steps / dpo.steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint, with the settings it started with")
    p.add_argument("--mode", choices=("clip", "dense"), help="DPO on rated clip pairs (clip, the default) or on segment-labelled explicit pairs (dense); sets dpo.mode")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set dpo.beta=2500 (repeatable; names as in the run's config.yaml)")
    p.set_defaults(func=cmd_train)

    p = _command(
        sub, "evaluate", "pair accuracy of a run's DPO adapter on a category (prints one JSON line)",
        "Score how often the DPO adapter's implicit reward ranks a category's pairs like its ratings (or segment labels).",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder with a trained DPO adapter")
    p.add_argument("--category", type=Path, required=True, help="category folder to score; may be one the run never saw")
    p.add_argument("--samples", type=int, metavar="K", help="noise/timestep draws per pair (default: the run's dpo.eval_samples)")
    p.add_argument("--mode", choices=("clip", "dense"), help="score clip pairs, or each labelled segment of the explicit pairs (default: the run's dpo.mode)")
    p.set_defaults(func=cmd_evaluate)

    p = _command(
        sub, "check", "validate a category folder, or loose clip files, and list every problem (one sentence each)",
        "Validate a category (category.json, ratings, pairs; every clip it uses is decoded) or, with --clips, "
        "each given file as the app's upload would: type, size, decoding, length. A folder without category.json gets "
        "a line for each of its files too. Exit code 2 when anything must be fixed.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--category", type=Path, help="category folder (category.json + clips/)")
    what.add_argument("--clips", type=Path, nargs="+", metavar="FILE", help="clip files, or folders of them, to check one by one")
    p.add_argument("--preset", help="preset whose frame count and size the clips must fit (default: this machine's)")
    p.set_defaults(func=cmd_check)

    p = _command(
        sub, "generate", "make a clip with a run's adapters, first-frame-conditioned",
        "Make a clip with a trained run: frame 0 is an image (yours, or one DPO-SDXL draws from the prompt), the "
        "later frames are sampled with the run's motion and DPO adapters at the strengths given.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder with at least its motion adapter trained")
    p.add_argument("--prompt", required=True, help="what the clip shows (the run's category prompt is a good start)")
    p.add_argument("--first-frame", type=Path, metavar="IMAGE", help="image for frame 0, resized and centre-cropped (default: DPO-SDXL draws one from the prompt)")
    p.add_argument("--seed", type=int, default=0, help="decides the drawn first frame and the video's noise (default 0)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the run's generate.steps)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the run's generate.guidance)")
    p.add_argument("--dpo-scale", type=float, default=1.0, help="strength of the DPO adapter (0 = motion adapter only; default 1)")
    p.add_argument("--motion-scale", type=float, default=1.0, help="strength of the motion adapter (default 1)")
    p.add_argument("--compare", action="store_true", help="also write the same seed without DPO, and both side by side")
    p.add_argument("--out", type=Path, required=True, help="FILE.mp4 or FILE.gif (FILE.first.png and, with --compare, FILE.nodpo/.compare go beside it)")
    p.set_defaults(func=cmd_generate)

    p = _command(sub, "export", "write a run's LoRA for diffusers, kohya-style tools or ComfyUI")
    p.add_argument("--run", type=Path, required=True, help="a run folder with both adapters trained")
    p.add_argument(
        "--format", choices=("diffusers", "kohya", "comfy-motion"), default="diffusers",
        help="diffusers (load_lora_weights, the default), kohya (A1111/ComfyUI LoRA loaders) or comfy-motion (AnimateDiff motion LoRA)",
    )
    p.add_argument("--merge", action="store_true", help="motion and DPO adapters combined into one file")
    p.add_argument("--out", type=Path, required=True, help="FILE.safetensors (a model card README.md goes beside it)")
    p.add_argument("--zip", action="store_true", help="also write FILE.zip: the exported files, their model card and the run's config.yaml")
    p.set_defaults(func=cmd_export)

    p = _command(sub, "metrics", "temporal consistency (SSIM, MSE) and CLIP score of clips, one JSON line each")
    p.add_argument("videos", type=Path, nargs="+", metavar="VIDEO", help="clips to measure (MP4, WebM, MOV or GIF)")
    p.add_argument("--prompt", help="text for the CLIP score (skipped when no CLIP model is on this machine)")
    p.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP model id or folder, never downloaded")
    p.set_defaults(func=cmd_metrics)

    p = _command(sub, "dense-pairs", "make aligned pairs (DenseDPO) from category clips with a run's model; prints one JSON line per pair")
    p.add_argument("--run", type=Path, required=True, help="a run with a trained motion adapter (its DPO adapter is used too when present)")
    p.add_argument("--category", type=Path, required=True, help="the clips are read from and written into this category")
    p.add_argument("--clips", nargs="+", metavar="CLIP", help="source clip file names (default: every rated clip)")
    p.add_argument("--eta", type=float, help="noising strength in (0, 1] (default: the run's dense.eta, 0.75)")
    p.add_argument("--seed", type=int, default=0, help="decides both clips' noise; also part of their file names")
    p.add_argument("--segments", type=int, help="segments per pair (default: data.frames / dense.segment_frames)")
    p.set_defaults(func=cmd_dense_pairs)

    p = _command(sub, "bench", "memory, speed and MFU of training steps, or load time and host memory (--load); one JSON line each")
    p.add_argument("--preset", help="preset name or YAML path (default: sd15-24gb with a GPU, tiny without)")
    p.add_argument("--all-presets", action="store_true", help="every preset in presets/")
    p.add_argument("--stage", choices=("motion", "dpo", "both"), default="both", help="which stage's step to measure (default both)")
    p.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, allocator, optimizer state)")
    p.add_argument("--naive", action="store_true", help="also run the published-code baseline and print naive/huvi ratios")
    p.add_argument("--estimate", action="store_true", help="print meta-device memory and FLOP estimates instead of running steps")
    p.add_argument(
        "--load", action="store_true",
        help="load the preset's weights (Hub ids or folders, as train does) and run its first step: load seconds and peak host memory",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, as for `huvi train` (repeatable)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, for a GPU not in the built-in table")
    p.add_argument("--json-out", type=Path, help="also write the JSON lines to this file")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.set_defaults(func=cmd_bench)

    p = _command(
        sub, "make-test-weights",
        "write full-size SD1.5 and AnimateDiff folders with random weights (diffusers layout, ~6 GB) for offline checks",
        "Writes DIR/stable-diffusion-v1-5 and DIR/animatediff-motion-adapter-v1-5-2 with full-size random "
        "weights from huvi/configs/ (tokenizer built offline), so the real loading code runs without a download. "
        "Point a preset at them with the printed --set values. A complete folder is reused.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder to write the two model folders into")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--force", action="store_true", help="write them again even when DIR already holds them")
    p.set_defaults(func=cmd_make_test_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except HuviError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
