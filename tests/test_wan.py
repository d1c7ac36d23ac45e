"""The Wan family on its tiny random components: registry, VAE frame counts, flow-matching noising,
the first DPO step, first-frame-held sampling, and a CLI train + generate + export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import metric_rows
from huvi.cli import main
from huvi.config import load_config
from huvi.families import family_for
from huvi.families.wan import tiny
from huvi.families.wan.family import Wan
from huvi.runs import Run
from huvi.synthetic import direction_category
from huvi.trainer import train
from huvi.video import read_clip

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def family() -> Wan:
    return family_for(load_config("wan-tiny").model)


@pytest.fixture(scope="module")
def clip_latents(family) -> torch.Tensor:
    """A 9-frame 64x64 clip's latents: (c, f', h, w)."""
    frames = (np.random.default_rng(0).random((9, 64, 64, 3)) * 255).astype(np.uint8)
    return family.load_encoders().encode_frames(frames, CPU)


def test_the_registry_resolves_wan(family):
    assert isinstance(family, Wan) and family.name == "wan"
    assert family.shift == 3.0  # Wan 2.1's scheduler config at 480p
    assert family.latent_frames(9) == 3 and family.latent_frames(81) == 21


@pytest.mark.parametrize("frames, latent_frames", [(9, 3), (5, 2), (1, 1), (11, 3)])
def test_the_causal_vae_gives_one_latent_frame_per_four_after_the_first(family, frames, latent_frames):
    clip = (np.random.default_rng(1).random((frames, 64, 64, 3)) * 255).astype(np.uint8)
    encoders = family.load_encoders()
    latents = encoders.encode_frames(clip, CPU)
    assert latents.shape == (16, latent_frames, 8, 8)  # (c, 1 + (f - 1) // 4, h, w)
    assert encoders.decode(latents[None]).shape == (1 + 4 * (latent_frames - 1), 64, 64, 3)
    assert encoders.encode_prompt("a red ball", CPU).shape == family.prompt_shape == (16, 32)


def test_the_tiny_vae_latent_stats_are_its_own_on_the_toy_clips(tmp_path):
    """tiny.VAE's latents_mean/std, measured as its comment says (posterior means of 6 direction_category
    clips, 9 frames at stride 3, 64x64, per channel): a change to the tiny VAE's weights (its seed, or
    what is drawn before it) must measure them again, or its latents are no longer unit-scaled."""
    vae = tiny.build_components()["vae"]
    root = direction_category(tmp_path, clips=6, seed=0, size=64)
    clips = [read_clip(path, 64, 64, stride=3, max_frames=9) for path in sorted((root / "clips").glob("*.mp4"))]
    pixels = torch.from_numpy(np.stack(clips)).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)  # (6, 3, f, h, w) in [-1, 1]
    with torch.no_grad():
        means = vae.encode(pixels).latent_dist.mean  # (6, 16, f', h, w)
    assert means.mean(dim=(0, 2, 3, 4)).tolist() == pytest.approx(tiny.VAE["latents_mean"], abs=2e-3)
    assert means.std(dim=(0, 2, 3, 4)).tolist() == pytest.approx(tiny.VAE["latents_std"], abs=2e-3)


def test_noisy_input_holds_latent_frame_0_and_the_target_is_the_velocity(family, clip_latents):
    g = torch.Generator().manual_seed(0)
    latents = clip_latents[None].repeat(3, 1, 1, 1, 1)  # (b, c, f, h, w)
    noise = torch.randn(latents.shape, generator=g)
    timesteps = family.sample_timesteps(3, g)
    assert ((timesteps >= 0) & (timesteps < 1000)).all()
    noisy = family.noisy_input(latents, noise, timesteps)
    sigma = (timesteps / 1000).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(noisy[:, :, 1:], ((1 - sigma) * latents + sigma * noise)[:, :, 1:])
    assert torch.equal(noisy[:, :, 0], latents[:, :, 0])
    assert torch.equal(family.target(latents, noise, timesteps), noise - latents)


def test_sampling_holds_latent_frame_0_at_the_clean_latent(family, clip_latents):
    model, text = family.load_denoiser(), family.load_encoders().encode_prompt("a ball", CPU)
    first = clip_latents[:, 0]  # (c, h, w)
    for name, init in (("euler", None), ("dpm++", clip_latents[None])):
        out = family.sample(model, family.sampler(name), first, text, torch.zeros_like(text), 3, 3, 2.0,
                            torch.Generator().manual_seed(0), show_progress=False, init=init, strength=0.6)
        assert out.shape == (1, 16, 3, 8, 8) and torch.equal(out[0, :, 0], first)
        assert torch.isfinite(out).all()


def test_first_dpo_step_is_ln2(category, tmp_path):
    cfg = load_config("wan-tiny", {"motion": {"steps": 1}, "dpo": {"steps": 2}})
    train(cfg, category, tmp_path / "run", show_progress=False)
    rows = [r for r in metric_rows(tmp_path / "run") if r["stage"] == "dpo"]
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-6 and rows[0]["accuracy"] == 0.5
    assert rows[0]["loss_w"] == rows[0]["ref_loss_w"] and rows[0]["loss_l"] == rows[0]["ref_loss_l"]


def test_cli_trains_wan_tiny_and_generates_a_clip(category, tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "clip.mp4"
    assert main(["train", "--category", str(category), "--out", str(run_dir), "--preset", "wan-tiny", "--steps", "2"]) == 0, capsys.readouterr().err
    assert [(r["stage"], r["step"]) for r in metric_rows(run_dir)] == [("motion", 1), ("motion", 2), ("dpo", 1), ("dpo", 2)]
    assert Run(run_dir).read_config().model.family == "wan"
    assert main(["generate", "--run", str(run_dir), "--prompt", "a red square", "--seed", "1", "--out", str(out)]) == 0, capsys.readouterr().err
    assert read_clip(out, None, None).shape[0] == 9
    for fmt in ("diffusers", "comfy"):  # tests/test_wan_export.py checks what the files hold
        out = tmp_path / fmt / "x.safetensors"
        assert main(["export", "--run", str(run_dir), "--format", fmt, "--merge", "--out", str(out)]) == 0, capsys.readouterr().err
        assert out.is_file() and (out.parent / "README.md").is_file()


@pytest.mark.parametrize("preset", ["wan-tiny", "wan21-1.3b", "wan22-5b"])
def test_wan_presets_pick_the_family_and_causal_vae_frame_counts(preset):
    cfg = load_config(preset)
    assert cfg.model.family == "wan" and cfg.model.attention == "full" and cfg.generate.scheduler == "euler"
    assert (cfg.data.frames - 1) % 4 == 0 and cfg.data.max_cached_frames == cfg.data.frames and not cfg.data.temporal_crop
