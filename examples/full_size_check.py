"""The real path at full size, offline: each GPU preset through the CLI on random full-size model folders.

    python examples/full_size_check.py [--weights DIR] [--work DIR] [--presets sd15-24gb wan21-1.3b ...]

Full-size random weights in diffusers layout come from `python -m huvi make-test-weights` (built
once per family and reused: SD1.5 + AnimateDiff ~6 GB, Wan 2.1 1.3B + Wan 2.2 5B ~19 GB). Each preset
then runs through `python -m huvi` with only its model folders, clip size and step counts overridden,
in bf16 as a GPU runs it (`precision: auto` is fp32 on a CPU), everything else its own (8-bit AdamW,
gradient checkpointing, its attention, its adapter ranks).

The sd15 presets (4 frames of 64x64, two steps per stage):

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

The wan presets (5 frames of 64x64: two latent frames; Wan 2.2's 16x VAE leaves 2x2 tokens a frame).
At this size a step's cost is the 512 prompt tokens (WanPipeline pads every prompt to 512) that every
block's cross-attention projects, so the steps are fewer:

    train     two motion steps and one DPO step, a checkpoint after each; SIGKILL once checkpoint
              motion-000001 is on disk; `--resume` to the end
    evaluate  the run's pair accuracy on a category of 3 pairs
    generate  from a first-frame image (latent frame 0 held clean at every step)
    export    diffusers (two files) and comfy (merged); the diffusers files load into a fresh WanPipeline
              built from the folder and hold the run's LoRA weights, layer for layer; the comfy file goes
              through diffusers' own converter of ComfyUI-format Wan LoRAs, every key used, and loads there

Each step prints one JSON line with its seconds, what it checked, and the peak resident memory of the
largest `python -m huvi` run so far and of this script; a failed check raises, and the script exits 1.
tests/test_full_size.py (marked slow) and .ci/run run it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from huvi.config import load_config
from huvi.families import family_for
from huvi.io import write_json
from huvi.runs import Run
from huvi.synthetic import direction_category

SD15_PRESETS = ("sd15-24gb", "sd15-16gb", "sd15-12gb")
WAN_PRESETS = ("wan21-1.3b", "wan22-5b")
PRESETS = SD15_PRESETS + WAN_PRESETS
# Sizes and steps only: 4 frames of 64x64 (8x8 latents), 2 steps per stage, a checkpoint after each.
SIZE = [
    "data.frames=4", "data.stride=1", "data.width=64", "data.height=64", "data.max_cached_frames=4",
    "motion.steps=2", "dpo.steps=2", "motion.checkpoint_every=1", "dpo.checkpoint_every=1",
    "dpo.eval_samples=1", "generate.steps=2", "dense.segment_frames=2",
]  # fmt: skip
# 5 frames of 64x64 (1 + 4: two latent frames), two motion steps and one DPO step, a checkpoint after each.
WAN_SIZE = [
    "data.frames=5", "data.stride=1", "data.width=64", "data.height=64", "data.max_cached_frames=5",
    "motion.steps=2", "dpo.steps=1", "motion.checkpoint_every=1", "dpo.checkpoint_every=1",
    "dpo.eval_samples=1", "generate.steps=2",
]  # fmt: skip
BF16 = "precision=bf16"  # what `precision: auto` picks on a GPU with bf16
GIB = 2**20  # ru_maxrss is in KiB on Linux


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def huvi(*args: str, timeout: int = 1800) -> str:
    """`python -m huvi ARGS`; its stdout, or a RuntimeError with the end of its stderr."""
    proc = subprocess.run([sys.executable, "-m", "huvi", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m huvi {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_killed_and_resumed(category: Path, run: Path, preset: str, sets: list[str], killed_after: str = "dpo-000001") -> dict:
    """Train through the CLI, SIGKILL once checkpoint `killed_after` is on disk, resume to the end."""
    argv = [sys.executable, "-m", "huvi", "train", "--category", str(category), "--out", str(run)]
    proc = subprocess.Popen([*argv, "--preset", preset, *sets], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = run / "checkpoints" / killed_after / "state.json"
    while not marker.is_file() and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"train ended (exit {proc.returncode}) before checkpoint {killed_after}:\n{proc.stderr.read()[-3000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    optimizer = load_file(str(marker.parent / "optimizer.safetensors"))
    assert any("__bnb_optimizer_quant_state__" in k for k in optimizer), "the checkpoint holds no bitsandbytes 8-bit AdamW state"
    huvi("train", "--category", str(category), "--out", str(run), "--resume")
    rows, cfg = Run(run).read_metrics(), Run(run).read_config()
    steps = [(r["stage"], r["step"]) for r in rows]
    assert steps == [(stage, i) for stage in ("motion", "dpo") for i in range(1, cfg.stage(stage).steps + 1)], steps
    assert all(np.isfinite(r["loss"]) for r in rows), rows
    first_dpo = rows[cfg.motion.steps]
    assert abs(first_dpo["loss"] - np.log(2)) < 1e-5, first_dpo  # the DPO adapter starts as the reference
    return {"killed_after": killed_after, "resumed_to": steps[-1], "first_dpo_loss": first_dpo["loss"], "last": rows[-1]}


def pipeline(weights: dict, dtype: torch.dtype):
    from diffusers import AnimateDiffPipeline, MotionAdapter

    adapter = MotionAdapter.from_pretrained(weights["motion_adapter"], torch_dtype=dtype)
    return AnimateDiffPipeline.from_pretrained(weights["base"], motion_adapter=adapter, torch_dtype=dtype)


def lora_layers(unet, adapter: str) -> dict:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer) and adapter in m.lora_A}


def export(run: Path, out: Path, formats: tuple[tuple[str, bool], ...]) -> dict[str, list[Path]]:
    """`huvi export` in each (format, merge): name -> the files written, each with its model card."""
    files = {}
    for fmt, merge in formats:
        name = f"{fmt}{'-merged' if merge else ''}"
        printed = json.loads(huvi("export", "--run", str(run), "--format", fmt, *(["--merge"] if merge else []), "--out", str(out / name / f"{name}.safetensors")))
        files[name] = [Path(f) for f in printed["files"]]
        assert Path(printed["card"]).is_file()
    return files


def check_diffusers_files(pipe, denoiser, run: Path, files: list[Path]) -> dict:
    """Load the diffusers export (DPO file, motion file) into `pipe`: every LoRA layer of `denoiser`
    holds the run's weights (in bf16)."""
    checked = {}
    for path, adapter in zip(files, ("dpo", "motion"), strict=True):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
        trained = load_file(str(Run(run).adapter_path(adapter)))  # peft keys, fp32
        layers = lora_layers(denoiser, adapter)
        assert len(layers) * 2 == len(trained), (adapter, len(layers), len(trained))
        for module, layer in layers.items():
            for part, weight in (("lora_A", layer.lora_A[adapter].weight), ("lora_B", layer.lora_B[adapter].weight)):
                assert torch.equal(weight.float(), trained[f"{module}.{part}.weight"].to(torch.bfloat16).float()), (adapter, module, part)
        checked[f"diffusers {adapter}"] = f"{len(layers)} layers, the run's weights"
    return checked


def check_exports(run: Path, out: Path, weights: dict) -> dict:
    """Export every format; load the diffusers and kohya files into a fresh AnimateDiffPipeline."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    files = export(run, out, (("diffusers", False), ("diffusers", True), ("kohya", False), ("comfy-motion", True)))
    pipe = pipeline(weights, torch.bfloat16)
    checked = check_diffusers_files(pipe, pipe.unet, run, files["diffusers"])
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


def check_wan_exports(run: Path, out: Path, base: str) -> dict:
    """Export diffusers (two files) and comfy (merged); load them into a fresh WanPipeline built from `base`."""
    from diffusers import WanPipeline
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    files = export(run, out, (("diffusers", False), ("comfy", True)))
    pipe = WanPipeline.from_pretrained(base, torch_dtype=torch.bfloat16)
    checked = check_diffusers_files(pipe, pipe.transformer, run, files["diffusers"])
    path = files["comfy-merged"][0]
    tensors = load_file(str(path))
    converted = _convert_non_diffusers_wan_lora_to_diffusers(dict(tensors))  # raises on a key it cannot place
    modules = {key.removesuffix(".lora_down.weight") for key in tensors if key.endswith(".lora_down.weight")}
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="comfy")
    assert len(lora_layers(pipe.transformer, "comfy")) == len(modules) == len(converted) // 2, (len(modules), len(converted))
    checked["comfy"] = f"{len(modules)} layers in the original Wan naming, loaded by diffusers"
    return {"files": sorted(f.name for group in files.values() for f in group), "checked": checked}


def peak_rss() -> dict:
    """Peak resident memory of the largest `python -m huvi` run so far, and of this script (GiB)."""
    children, own = (resource.getrusage(who).ru_maxrss / GIB for who in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF))
    return {"huvi_peak_rss_gib": round(children, 2), "script_peak_rss_gib": round(own, 2)}


def stepper(preset: str) -> Callable[[str, dict], None]:
    """step(name, result): one JSON line with the seconds since the last step and the peak memory so far."""
    clock = time.perf_counter()

    def step(name: str, result: dict) -> None:
        nonlocal clock
        emit({"preset": preset, "step": name, "seconds": round(time.perf_counter() - clock, 1)} | result | peak_rss())
        clock = time.perf_counter()

    return step


def generate(run: Path, work: Path, *extra: str) -> tuple[Path, dict]:
    """`huvi generate` from a random first-frame image: the image, and the files written."""
    image = work / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    result = json.loads(huvi("generate", "--run", str(run), "--prompt", "a square", "--first-frame", str(image), *extra, "--out", str(run / "sample.mp4")))
    assert all(Path(p).is_file() for p in result.values())
    return image, {"files": sorted(Path(p).name for p in result.values())}


def check_preset(preset: str, weights: dict, work: Path, category: Path) -> None:
    sets = [f"--set={s}" for s in [*weights["set"], *SIZE, BF16]]
    run = work / preset
    step = stepper(preset)
    step("train", train_killed_and_resumed(category, run, preset, sets))
    step("evaluate", json.loads(huvi("evaluate", "--run", str(run), "--category", str(category), "--samples", "1")))
    image, generated = generate(run, work, "--compare")
    step("generate", generated)
    clip = min((category / "clips").iterdir()).name
    pairs = [json.loads(line) for line in huvi("dense-pairs", "--run", str(run), "--category", str(category), "--clips", clip, "--seed", "1").splitlines()]
    assert len(pairs) == 1 and all((category / "clips" / pairs[0][k]).is_file() for k in ("a", "b"))
    step("dense-pairs", {"pair": [pairs[0]["a"], pairs[0]["b"]], "segments": len(pairs[0]["segments"])})
    step("export", check_exports(run, work / f"{preset}-export", weights))
    load = json.loads(huvi("bench", "--load", "--preset", preset, "--stage", "dpo", *sets).splitlines()[-1])
    step("load", {k: load[k] for k in ("precision", "load_unet_s", "load_s", "first_step_s", "cpu_peak_rss_load_gib", "cpu_peak_rss_gib")})
    step("again", generate_twice(run, image))


def check_wan_preset(preset: str, weights: dict, work: Path, category: Path) -> None:
    sets = [f"--set={s}" for s in [*weights["set"], *WAN_SIZE, BF16]]
    run = work / preset
    step = stepper(preset)
    step("train", train_killed_and_resumed(category, run, preset, sets, killed_after="motion-000001"))
    step("evaluate", json.loads(huvi("evaluate", "--run", str(run), "--category", str(category), "--samples", "1")))
    step("generate", generate(run, work)[1])
    step("export", check_wan_exports(run, work / f"{preset}-export", weights["base"]))


def three_pair_category(root: Path) -> Path:
    """4 clips, one rated above the other three: 3 pairs, the fewest a category holds (on a CPU each
    pair costs a Wan evaluation two full-size forward passes)."""
    category = direction_category(root, clips=4, frames=8, size=64, spread=False)
    meta = json.loads((category / "category.json").read_text())
    preferred = min(name for name in meta["scores"] if name.startswith("right"))
    meta["scores"] = {name: 5 if name == preferred else 1 for name in meta["scores"]}
    write_json(category / "category.json", meta)
    return category


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
    weights = {}
    for preset in args.presets:  # a family's presets that share a model find it written
        clock = time.perf_counter()
        weights[preset] = family_for(load_config(preset).model).write_test_weights(args.weights)
        emit({"step": "weights", "for": preset, "seconds": round(time.perf_counter() - clock, 1)} | weights[preset])
    failed = []
    for preset in args.presets:
        try:
            if preset in WAN_PRESETS:
                check_wan_preset(preset, weights[preset], work, three_pair_category(work / f"{preset}-category"))
            else:
                check_preset(preset, weights[preset], work, direction_category(work / f"{preset}-category", clips=4, frames=8, size=64))
        except Exception as err:  # noqa: BLE001 (a failed check or a crash: report it, go on with the next preset)
            failed.append(preset)
            emit({"preset": preset, "failed": f"{type(err).__name__}: {err}"})
    emit({"summary": "failed" if failed else "passed", "presets": args.presets, "failed": failed, "seconds": round(time.perf_counter() - start, 1), "work": str(work)})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
