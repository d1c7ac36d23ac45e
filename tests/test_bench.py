"""`python -m huvi bench` on the CPU: the tiny preset's lines, the full-size shapes, the naive baseline.

No timing is asserted: the figures only have to be there and well formed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from huvi.bench.measure import peak_tflops
from huvi.bench.step import build_setup
from huvi.cli import main
from huvi.config import ModelConfig, load_config
from huvi.families import family_for
from huvi.families.full_size import CONFIG_DIR
from huvi.families.sd15 import full_size
from huvi.families.sd15.checkpointing import CheckpointedMotionModule
from huvi.families.sd15.models import load_unet
from huvi.families.wan import full_size as wan_full_size

ROOT = Path(__file__).resolve().parent.parent

# The keys docs/BENCHMARKS.md documents for a measured line.
MEASURED_KEYS = {
    "kind", "date", "device", "gpu_memory_gib", "torch", "cuda", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes",
    "preset", "stage", "naive", "frames", "resolution", "batch", "gradient_checkpointing", "attention", "precision", "optimizer",
    "params_total", "params_trainable", "warmup", "steps", "gpu_resident_gib", "gpu_peak_allocated_gib", "gpu_peak_reserved_gib", "cpu_peak_rss_gib",
    "step_s_median", "step_s_p10", "step_s_p90", "step_s", "flops_per_step", "hardware_flops_per_step", "flops_method",
    "achieved_tflops", "peak_tflops", "mfu", "hfu", "error",
}  # fmt: skip
RATIO_KEYS = {"naive_over_huvi_memory", "naive_over_huvi_time", "ratio_memory_basis"}
ESTIMATE_KEYS = {
    "kind", "preset", "stage", "naive", "frames", "resolution", "batch", "gradient_checkpointing", "attention", "precision", "optimizer",
    "params_trainable", "weights_gib", "kept_for_backward_gib", "activations_peak_gib", "lora_fp32_extra_gib", "optimizer_states_gib",
    "estimated_peak_gib", "kept_for_backward_by_part_gib", "flops_per_step", "forward_flops_by_part", "method",
}  # fmt: skip


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(args: list[str], capsys) -> list[dict]:
    assert main(["bench", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_tiny_bench_runs_both_stages_and_the_naive_baseline(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    rows = run_bench(["--preset", "tiny", "--stage", "both", "--steps", "1", "--warmup", "0", "--naive", "--json-out", str(out)], capsys)
    assert [(r["stage"], r["naive"]) for r in rows] == [("motion", False), ("motion", True), ("dpo", False), ("dpo", True)]
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    for row in rows:
        assert MEASURED_KEYS <= row.keys(), MEASURED_KEYS - row.keys()
        assert (RATIO_KEYS <= row.keys()) == row["naive"]
        assert row["kind"] == "measured" and row["error"] is None
        assert (row["preset"], row["frames"], row["resolution"], row["precision"]) == ("tiny", 24, "32x32", "no")
        assert len(row["step_s"]) == 1 and row["step_s_median"] > 0
        assert row["flops_per_step"] == row["hardware_flops_per_step"] > 0  # the tiny preset does not checkpoint
        assert row["gpu_peak_allocated_gib"] is None and row["mfu"] is None  # GPU figures are null on a CPU
        assert row["params_trainable"] > 0
    table = _example("bench_table").render(rows)  # the Markdown rows examples/gpu_check.sh prints for docs/BENCHMARKS.md
    assert table.startswith(f"Device: {rows[0]['device']}") and table.count("\n| tiny | ") == 4 and "| dpo | naive |" in table
    huvi_dpo, naive_dpo = rows[2], rows[3]
    assert naive_dpo["optimizer"] == "AdamW"
    assert naive_dpo["flops_per_step"] > huvi_dpo["flops_per_step"]  # it also runs the VAE and text encoder
    assert naive_dpo["params_total"] > 2 * huvi_dpo["params_total"] - huvi_dpo["params_trainable"]  # a second UNet


def test_profile_writes_the_operators_table_after_the_timed_steps(tmp_path, capsys):
    (row,) = run_bench(["--preset", "tiny", "--stage", "dpo", "--steps", "1", "--warmup", "0", "--profile", str(tmp_path)], capsys)
    assert len(row["step_s"]) == 1  # the profiled steps are not timed
    table = (tmp_path / "tiny-dpo.txt").read_text()
    assert row["profile"] == str(tmp_path / "tiny-dpo.txt") and "aten::" in table and "self_cpu_time_total" in table
    assert row["profile_aten_ops_per_step"] > 100 and row["profile_kernels_per_step"] is None  # no device kernels on a CPU


def test_estimate_lines_show_what_checkpointing_saves(capsys):
    rows = run_bench(["--preset", "tiny", "--stage", "motion", "--estimate", "--set", "model.gradient_checkpointing=true"], capsys)
    assert [r["gradient_checkpointing"] for r in rows] == [True, False]
    for row in rows:
        assert row.keys() == ESTIMATE_KEYS and row["kind"] == "estimate"
        assert row["estimated_peak_gib"] >= row["weights_gib"] + row["activations_peak_gib"]
    with_ckpt, without = rows
    assert with_ckpt["kept_for_backward_gib"] < without["kept_for_backward_gib"]
    assert with_ckpt["flops_per_step"] > without["flops_per_step"]  # the recomputation


def test_full_size_architectures_have_the_published_parameter_counts():
    """SD1.5 UNet 859.5M, with the v1-5-2 motion modules 1312.7M (REFERENCE §4); shapes only, no memory."""
    with torch.device("meta"):
        unet2d = UNet2DConditionModel.from_config(full_size.read_architecture(full_size.SD15_UNET))
    unet = full_size.full_size_unet(ModelConfig(), "meta")
    vae, text_encoder = full_size.full_size_encoders("meta")
    assert parameters(unet2d) == 859_520_964
    assert parameters(unet) == 1_312_730_244
    assert parameters(vae) == 83_653_863
    assert parameters(text_encoder) == 123_060_480
    assert {p.device.type for m in (unet, vae, text_encoder) for p in m.parameters()} == {"meta"}


def test_naive_reference_is_a_deep_copy_and_huvis_is_the_same_unet():
    cfg = load_config("tiny")
    cpu = torch.device("cpu")
    huvi = build_setup(cfg, "dpo", False, cpu, torch.float32)
    naive = build_setup(cfg, "dpo", True, cpu, torch.float32)
    assert huvi.reference is huvi.unet
    assert naive.reference is not naive.unet
    assert not storages(naive.reference) & storages(naive.unet)
    assert "dpo" not in naive.reference.peft_config and not any(p.requires_grad for p in naive.reference.parameters())
    assert [type(m).__name__ for m in huvi.modules()] == ["UNetMotionModel"]
    assert [type(m).__name__ for m in naive.modules()] == ["UNetMotionModel", "UNetMotionModel", "AutoencoderKL", "CLIPTextModel"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_motion_modules_follow_gradient_checkpointing(checkpointing):
    """With checkpointing on, a down block's motion module runs again in backward; gradients are unchanged."""
    unet = load_unet(load_config("tiny").model)
    module = unet.down_blocks[0].motion_modules[0]
    assert isinstance(module, CheckpointedMotionModule)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    calls = []
    module.proj_in.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 4, 16, 16)  # (b, c, f, h, w)
    text = torch.randn(4, 77, 32)  # (b f, tokens, dim)
    unet(sample, torch.tensor([500]), encoder_hidden_states=text).sample.square().mean().backward()
    assert len(calls) == (2 if checkpointing else 1)
    grad = module.proj_in.weight.grad
    reference = load_unet(load_config("tiny").model)
    reference(sample, torch.tensor([500]), encoder_hidden_states=text).sample.square().mean().backward()
    torch.testing.assert_close(grad, reference.down_blocks[0].motion_modules[0].proj_in.weight.grad)


def test_peak_tflops_picks_the_most_specific_name():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert peak_tflops("NVIDIA L40S") == 362.1
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert peak_tflops("Some Future GPU") is None


@pytest.mark.parametrize(
    "preset, transformer, vae, latents, expand_timesteps, shift",
    [
        ("wan21-1.3b", 1_418_996_800, 126_892_531, (16, 9, 60, 104), False, 3.0),  # 33 frames at 832x480: 8x VAE
        ("wan22-5b", 4_999_787_712, 704_688_668, (48, 13, 30, 52), True, 5.0),  # 49 frames at 832x480: 16x VAE
    ],
)
def test_full_size_wan_architectures_need_no_download(preset, transformer, vae, latents, expand_timesteps, shift):
    """The Wan presets' Hub models from the shipped configs, on the meta device (HF_HUB_OFFLINE): the
    transformer (1.42B / 5.0B), the VAE, UMT5-XXL's 5.7B-parameter encoder, and the pipelines' modes."""
    cfg = load_config(preset)
    family = family_for(cfg.model)
    denoiser = family.random_denoiser("meta")
    vae_model, text_encoder = family.random_encoders("meta")
    assert (parameters(denoiser), parameters(vae_model), parameters(text_encoder)) == (transformer, vae, 5_680_910_336)
    assert family.latent_shape(cfg.data, cfg.data.frames) == latents and family.prompt_shape == (512, 4096)
    assert family.expand_timesteps == expand_timesteps and family.published_schedule().config.flow_shift == shift


def test_architecture_configs_ship_with_the_package():
    assert '[tool.setuptools.package-data]\nhuvi = ["configs/*.json"]' in (ROOT / "pyproject.toml").read_text()
    names = {full_size.SD15_UNET, full_size.SD15_VAE, full_size.SD15_TEXT_ENCODER, full_size.MOTION_ADAPTER, wan_full_size.UMT5_XXL}
    names |= {name for arch in wan_full_size.ARCHITECTURES.values() for name in (arch.transformer, arch.vae)}
    assert {p.stem for p in CONFIG_DIR.glob("*.json")} == names
