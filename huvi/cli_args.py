"""The arguments of `python -m huvi`: one sub-command per task, every option with its help line and
every command's `--help` ending with examples. huvi.cli runs the command parsed here.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from huvi.families import ALL_EXPORT_FORMATS, DEFAULT_FAMILY, FAMILIES

DESCRIPTION = "huvi: few-shot preference fine-tuning (a motion LoRA, then a Diffusion-DPO LoRA) of a text-to-video model."

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
    "presets": """examples:
  python -m huvi presets
  python -m huvi train --category data/demo --out runs/wan-demo --preset wan-tiny   # a preset from the list""",
    "generate": """examples:
  python -m huvi generate --run runs/demo --prompt "a square sliding across the frame" --out out/clip.mp4
  python -m huvi generate --run runs/guitar --prompt "a person playing guitar" --first-frame photo.jpg --seed 3 --compare --out out/guitar.mp4
  python -m huvi generate --run runs/guitar --prompt "a person playing guitar" --dpo-scale 0.5 --steps 30 --out out/half.gif""",
    "export": """examples:
  python -m huvi export --run runs/demo --out out/demo.safetensors                      # DPO + demo.motion.safetensors
  python -m huvi export --run runs/demo --merge --out out/demo-merged.safetensors --zip # one file, then one zip with its card
  python -m huvi export --run runs/demo --format kohya --merge --out out/kohya/demo.safetensors
  python -m huvi export --run runs/demo --format comfy-motion --merge --out out/comfy/demo.safetensors
  python -m huvi export --run runs/wan-demo --format comfy --out out/comfy/wan-demo.safetensors   # a Wan run""",
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
  python -m huvi make-test-weights /tmp/huvi-weights                      # SD1.5 + AnimateDiff, ~6 GB
  python -m huvi make-test-weights /tmp/huvi-weights --family wan         # Wan 2.1 T2V-1.3B and Wan 2.2 TI2V-5B, ~19 GB
  python -m huvi make-test-weights /tmp/huvi-weights --preset wan21-1.3b  # one preset's model
  python -m huvi make-test-weights /tmp/huvi-weights --seed 1 --force""",
}


def _command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose --help ends with its examples."""
    description = textwrap.fill(description or help[0].upper() + help[1:] + ".", width=100)
    return sub.add_parser(name, help=help, description=description, epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m huvi", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
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

    p = _command(
        sub, "evaluate", "pair accuracy of a run's DPO adapter on a category (prints one JSON line)",
        "Score how often the DPO adapter's implicit reward ranks a category's pairs like its ratings (or segment labels).",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder with a trained DPO adapter")
    p.add_argument("--category", type=Path, required=True, help="category folder to score; may be one the run never saw")
    p.add_argument("--samples", type=int, metavar="K", help="noise/timestep draws per pair (default: the run's dpo.eval_samples)")
    p.add_argument("--mode", choices=("clip", "dense"), help="score clip pairs, or each labelled segment of the explicit pairs (default: the run's dpo.mode)")

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

    _command(
        sub, "presets", "list every preset: its model family, VRAM tier and what it gives up",
        "List every preset of presets/ by model family: its VRAM tier (CPU for the tiny models built in code) and what it gives up "
        "against its family's largest tier (frames, clip size, LoRA ranks, the model). This machine's default is marked.",
    )

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

    p = _command(sub, "export", "write a run's LoRA for diffusers, kohya-style tools or ComfyUI")
    p.add_argument("--run", type=Path, required=True, help="a run folder with both adapters trained")
    p.add_argument(
        "--format", choices=ALL_EXPORT_FORMATS, default="diffusers",
        help="diffusers (load_lora_weights, the default; every family); for an SD1.5 run kohya (A1111/ComfyUI LoRA loaders) "
        "or comfy-motion (AnimateDiff motion LoRA); for a Wan run comfy (ComfyUI's Load LoRA, original Wan keys)",
    )
    p.add_argument("--merge", action="store_true", help="motion and DPO adapters combined into one file")
    p.add_argument("--out", type=Path, required=True, help="FILE.safetensors (a model card README.md goes beside it)")
    p.add_argument("--zip", action="store_true", help="also write FILE.zip: the exported files, their model card and the run's config.yaml")

    p = _command(sub, "metrics", "temporal consistency (SSIM, MSE) and CLIP score of clips, one JSON line each")
    p.add_argument("videos", type=Path, nargs="+", metavar="VIDEO", help="clips to measure (MP4, WebM, MOV or GIF)")
    p.add_argument("--prompt", help="text for the CLIP score (skipped when no CLIP model is on this machine)")
    p.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP model id or folder, never downloaded")

    p = _command(sub, "dense-pairs", "make aligned pairs (DenseDPO) from category clips with a run's model; prints one JSON line per pair")
    p.add_argument("--run", type=Path, required=True, help="a run with a trained motion adapter (its DPO adapter is used too when present)")
    p.add_argument("--category", type=Path, required=True, help="the clips are read from and written into this category")
    p.add_argument("--clips", nargs="+", metavar="CLIP", help="source clip file names (default: every rated clip)")
    p.add_argument("--eta", type=float, help="noising strength in (0, 1] (default: the run's dense.eta, 0.75)")
    p.add_argument("--seed", type=int, default=0, help="decides both clips' noise; also part of their file names")
    p.add_argument("--segments", type=int, help="segments per pair (default: data.frames / dense.segment_frames)")

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
    p.add_argument("--profile", type=Path, metavar="DIR", help="profile 2 more steps per configuration; the operators' table goes to DIR")
    p.add_argument("--json-out", type=Path, help="also write the JSON lines to this file")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    p = _command(
        sub, "make-test-weights",
        "write a family's full-size model folders with random weights (diffusers layout) for offline checks",
        "Writes the full-size models of a family's presets with random weights from huvi/configs/ (tokenizers "
        "built offline), so the real loading code runs without a download: for sd15 (the default) "
        "DIR/stable-diffusion-v1-5 and DIR/animatediff-motion-adapter-v1-5-2 (~6 GB); for wan "
        "DIR/Wan2.1-T2V-1.3B-Diffusers (~6 GB) and DIR/Wan2.2-TI2V-5B-Diffusers (~13 GB), each with a small UMT5 "
        "standing in for UMT5-XXL (huvi.families.wan.full_size). Prints one JSON line per model with the --set "
        "values that point a preset at it. A complete folder is reused.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder to write the model folders into")
    p.add_argument("--family", choices=sorted(FAMILIES), default=DEFAULT_FAMILY, help="write the models of every full-size preset of this family")
    p.add_argument("--preset", action="append", metavar="NAME", help="write this preset's model instead (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--force", action="store_true", help="write them again even when DIR already holds them")
    return parser
