"""The real path at full size, offline: each GPU preset through the CLI on random SD1.5 + AnimateDiff folders.

    python examples/full_size_check.py [--weights DIR] [--work DIR] [--presets sd15-24gb ...]

Full-size random weights in diffusers layout come from `python -m huvi make-test-weights` (built
once, ~6 GB, reused). Each preset then runs through `python -m huvi` with only its model folders,
clip size (4 frames of 64x64) and step counts overridden, in bf16 as a GPU runs it (`precision:
auto` is fp32 on a CPU), everything else its own (8-bit AdamW, gradient checkpointing,
sparse-causal attention, its adapter ranks):

    train     both stages with a checkpoint after every step; SIGKILL once checkpoint dpo-000001 is
              on disk; `--resume` to the end
    evaluate  the run's pair accuracy on its category
    generate  from a first-frame image, with the no-DPO comparison
    dense     `dense-pairs` from one clip
    export    diffusers (two files, and merged), kohya, comfy-motion. The diffusers files load into a
              fresh AnimateDiffPipeline built from the folders and hold the run's LoRA weights, layer
              for layer; the kohya file loads there too (diffusers' own kohya conversion, every
              key used); the comfy-motion keys name the motion adapter's temporal attention
              projections in the original AnimateDiff naming, with fitting shapes
    load      `bench --load`: seconds to load the preset's weights and peak host memory
    again     the app's Generate tab twice (huvi.model_cache): seconds until sampling starts, first and
              second click

Each step prints one JSON line with its seconds and what it checked; a failed check raises, and the
script exits 1. tests/test_full_size.py (marked slow) and .ci/run run it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from huvi.families.sd15.full_size import write_test_weights
from huvi.runs import Run
from huvi.synthetic import direction_category

PRESETS = ("sd15-24gb", "sd15-16gb", "sd15-12gb")
# Sizes and steps only: 4 frames of 64x64 (8x8 latents), 2 steps per stage, a checkpoint after each.
SIZE = [
    "data.frames=4", "data.stride=1", "data.width=64", "data.height=64", "data.max_cached_frames=4",
    "motion.steps=2", "dpo.steps=2", "motion.checkpoint_every=1", "dpo.checkpoint_every=1",
    "dpo.eval_samples=1", "generate.steps=2", "dense.segment_frames=2",
]  # fmt: skip
BF16 = "precision=bf16"  # what `precision: auto` picks on a GPU with bf16


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def huvi(*args: str, timeout: int = 1800) -> str:
    """`python -m huvi ARGS`; its stdout, or a RuntimeError with the end of its stderr."""
    proc = subprocess.run([sys.executable, "-m", "huvi", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m huvi {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_killed_and_resumed(category: Path, run: Path, preset: str, sets: list[str]) -> dict:
    """Train through the CLI, SIGKILL after the first DPO checkpoint, resume to the end."""
    argv = [sys.executable, "-m", "huvi", "train", "--category", str(category), "--out", str(run)]
    proc = subprocess.Popen([*argv, "--preset", preset, *sets], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = run / "checkpoints" / "dpo-000001" / "state.json"
    while not marker.is_file() and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"train ended (exit {proc.returncode}) before checkpoint dpo-000001:\n{proc.stderr.read()[-3000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    optimizer = load_file(str(marker.parent / "optimizer.safetensors"))
    assert any("__bnb_optimizer_quant_state__" in k for k in optimizer), "the checkpoint holds no bitsandbytes 8-bit AdamW state"
    huvi("train", "--category", str(category), "--out", str(run), "--resume")
    rows = Run(run).read_metrics()
    steps = [(r["stage"], r["step"]) for r in rows]
    assert steps == [("motion", 1), ("motion", 2), ("dpo", 1), ("dpo", 2)], steps
    assert all(np.isfinite(r["loss"]) for r in rows), rows
    assert abs(rows[2]["loss"] - np.log(2)) < 1e-5, rows[2]  # the DPO adapter starts as the reference
    return {"killed_after": "dpo-000001", "resumed_to": steps[-1], "first_dpo_loss": rows[2]["loss"], "last": rows[-1]}


def pipeline(weights, dtype: torch.dtype):
    from diffusers import AnimateDiffPipeline, MotionAdapter

    adapter = MotionAdapter.from_pretrained(weights.motion_adapter, torch_dtype=dtype)
    return AnimateDiffPipeline.from_pretrained(weights.base, motion_adapter=adapter, torch_dtype=dtype)


def lora_layers(unet, adapter: str) -> dict:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer) and adapter in m.lora_A}


def check_exports(run: Path, out: Path, weights) -> dict:
    """Export every format; load the diffusers and kohya files into a fresh AnimateDiffPipeline."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    files = {}
    for fmt, merge in (("diffusers", False), ("diffusers", True), ("kohya", False), ("comfy-motion", True)):
        name = f"{fmt}{'-merged' if merge else ''}"
        printed = json.loads(huvi("export", "--run", str(run), "--format", fmt, *(["--merge"] if merge else []), "--out", str(out / name / f"{name}.safetensors")))
        files[name] = [Path(f) for f in printed["files"]]
        assert Path(printed["card"]).is_file()
    checked = {}
    pipe = pipeline(weights, torch.bfloat16)
    dpo_file, motion_file = files["diffusers"]
    for path, adapter in ((dpo_file, "dpo"), (motion_file, "motion")):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
        trained = load_file(str(Run(run).adapter_path(adapter)))  # peft keys, fp32
        layers = lora_layers(pipe.unet, adapter)
        assert len(layers) * 2 == len(trained), (adapter, len(layers), len(trained))
        for module, layer in layers.items():
            for part, weight in (("lora_A", layer.lora_A[adapter].weight), ("lora_B", layer.lora_B[adapter].weight)):
                assert torch.equal(weight.float(), trained[f"{module}.{part}.weight"].to(torch.bfloat16).float()), (adapter, module, part)
        checked[f"diffusers {adapter}"] = f"{len(layers)} layers, the run's weights"
    kohya_dpo, kohya_motion = files["kohya"]
    for adapter, path in (("kohya_dpo", kohya_dpo), ("kohya_motion", kohya_motion)):
        tensors = load_file(str(path))
        converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(tensors))  # raises on a key it cannot place
        assert len(converted) + len(alphas) == len(tensors)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
        modules = {k.split(".")[0] for k in tensors}
        assert len(lora_layers(pipe.unet, adapter)) == len(modules), (path.name, len(modules))
        checked[adapter] = f"{len(modules)} SD1.5 layers loaded by diffusers"
    checked["comfy-motion"] = check_comfy_motion(files["comfy-motion-merged"][0], pipe.unet)
    return {"files": sorted(f.name for group in files.values() for f in group), "checked": checked}


def check_comfy_motion(path: Path, unet) -> str:
    """Every key names a temporal attention projection of the motion adapter in the original
    AnimateDiff naming (ComfyUI-AnimateDiff-Evolved's), with shapes that fit it."""
    tensors = load_file(str(path))
    weights = dict(unet.named_parameters())
    for key, value in tensors.items():
        module, lora = key.split(".processor.")  # BLOCK.motion_modules.I.temporal_transformer.transformer_blocks.J.attention_blocks.K
        proj, part = lora.split("_lora.")  # to_q, down.weight
        target = module.replace(".temporal_transformer", "").replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
        target += f".{proj}{'.0' if proj == 'to_out' else ''}.base_layer.weight"
        if target not in weights:
            target = target.replace(".base_layer", "")
        out_features, in_features = weights[target].shape
        assert value.shape == ((value.shape[0], in_features) if part == "down.weight" else (out_features, value.shape[1])), (key, value.shape)
    return f"{len(tensors) // 2} temporal attention layers, names and shapes fit"


def check_preset(preset: str, weights, work: Path, category: Path) -> None:
    sets = [f"--set={s}" for s in [*weights.overrides, *SIZE, BF16]]
    run = work / preset
    clock = time.perf_counter()

    def step(name: str, result: dict) -> None:
        nonlocal clock
        emit({"preset": preset, "step": name, "seconds": round(time.perf_counter() - clock, 1)} | result)
        clock = time.perf_counter()

    step("train", train_killed_and_resumed(category, run, preset, sets))
    step("evaluate", json.loads(huvi("evaluate", "--run", str(run), "--category", str(category), "--samples", "1")))
    image = work / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    result = json.loads(huvi("generate", "--run", str(run), "--prompt", "a square", "--first-frame", str(image), "--compare", "--out", str(run / "sample.mp4")))
    assert all(Path(p).is_file() for p in result.values())
    step("generate", {"files": sorted(Path(p).name for p in result.values())})
    clip = min((category / "clips").iterdir()).name
    pairs = [json.loads(line) for line in huvi("dense-pairs", "--run", str(run), "--category", str(category), "--clips", clip, "--seed", "1").splitlines()]
    assert len(pairs) == 1 and all((category / "clips" / pairs[0][k]).is_file() for k in ("a", "b"))
    step("dense-pairs", {"pair": [pairs[0]["a"], pairs[0]["b"]], "segments": len(pairs[0]["segments"])})
    step("export", check_exports(run, work / f"{preset}-export", weights))
    load = json.loads(huvi("bench", "--load", "--preset", preset, "--stage", "dpo", *sets).splitlines()[-1])
    step("load", {k: load[k] for k in ("precision", "load_unet_s", "load_s", "first_step_s", "cpu_peak_rss_load_gib", "cpu_peak_rss_gib")})
    step("again", generate_twice(run, image))


def generate_twice(run: Path, image: Path) -> dict:
    """Two Generate clicks as the app serves them: the model is loaded by the first and kept.
    Sampling starts when the first denoising step starts: its end less its own duration."""
    from huvi.generate import GenerateRequest
    from huvi.model_cache import ModelCache

    models = ModelCache()
    starts = []
    for click in range(2):
        begin, ends = time.perf_counter(), []
        request = GenerateRequest("a square", first_frame=image, seed=click)
        models.get(run).generate(request, run / f"click{click}.mp4", progress=lambda i, n, ends=ends: ends.append(time.perf_counter()), show_progress=False)
        starts.append(round(ends[0] - (ends[1] - ends[0]) - begin, 2))
    models.release()
    return {"first_click_sampling_after_s": starts[0], "second_click_sampling_after_s": starts[1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path(tempfile.gettempdir()) / "huvi-full-size-weights", help="where the full-size random weights are (written when missing)")
    parser.add_argument("--work", type=Path, help="folder for the category and runs (default: a new temporary folder)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="huvi-full-size-"))
    os.environ.setdefault("HUVI_CACHE", str(work / "cache"))
    os.environ.setdefault("HUVI_RUNS", str(work / "runs"))  # where `train` takes the GPU lock
    start = time.perf_counter()
    weights = write_test_weights(args.weights)
    emit({"step": "weights", "seconds": round(time.perf_counter() - start, 1), "base": str(weights.base), "motion_adapter": str(weights.motion_adapter)})
    failed = []
    for preset in args.presets:
        category = direction_category(work / f"{preset}-category", clips=4, frames=8, size=64)
        try:
            check_preset(preset, weights, work, category)
        except Exception as err:  # noqa: BLE001 (a failed check or a crash: report it, go on with the next preset)
            failed.append(preset)
            emit({"preset": preset, "failed": f"{type(err).__name__}: {err}"})
    emit({"summary": "failed" if failed else "passed", "presets": args.presets, "failed": failed, "seconds": round(time.perf_counter() - start, 1), "work": str(work)})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
