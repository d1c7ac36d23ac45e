"""The demo model (models/demo, examples/pretrain_demo.py) and its preset: it loads through the SD1.5
family's real loading path from any working directory, it is the CPU default, and from a drawn first
frame it generates clips in which the shape moves (huvi.track)."""

from __future__ import annotations

import torch

from huvi.catalogue import choose_preset, missing_weights, preset_entry
from huvi.config import load_config
from huvi.demo_data import prompt_frame
from huvi.families import family_for
from huvi.hub import REPO, local_source
from huvi.precision import default_preset
from huvi.track import motion_stats

DEMO = REPO / "models" / "demo"
MOVING = 0.15  # frame widths: what examples/pretrain_demo.py counts as moving


def test_the_demo_weights_ship_as_diffusers_folders_under_20_mb():
    files = [f for f in DEMO.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 20 * 2**20
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (DEMO / "sd15-demo" / part).is_dir()
    assert (DEMO / "sd15-demo" / "model_index.json").is_file() and (DEMO / "motion-adapter" / "config.json").is_file()
    assert (DEMO / "README.md").is_file()


def test_the_demo_preset_loads_its_folders_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's relative paths are the repository's
    cfg = load_config("demo")
    assert cfg.model.source == "pretrained" and not cfg.model.base.startswith("/")
    assert local_source(cfg.model.base) == str(DEMO / "sd15-demo") and missing_weights(cfg.model) == []
    family = family_for(cfg.model)
    unet, encoders = family.load_denoiser(), family.load_encoders()
    assert 1e6 < sum(p.numel() for p in unet.parameters()) < 10e6  # a few million
    assert type(unet).__name__ == "UNetMotionModel" and family.schedule.config.prediction_type == "epsilon"
    assert encoders.encode_frames(prompt_frame("a red disc", 0)[None], "cpu").shape == (4, 1, 16, 16)


def test_demo_is_the_cpu_default_and_tiny_stays_listed(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert default_preset() == "demo" and choose_preset().name == "demo"
    demo = preset_entry("demo")
    assert demo.cpu and demo.gives_up[0].startswith("the real model (sd15-demo")
    assert preset_entry("tiny").cpu


@torch.no_grad()
def test_the_demo_model_moves_the_shape_it_is_given():
    """From drawn first frames (generate.first_frame.source: shapes), with the preset's sampler,
    steps and guidance, the shipped model keeps the shape in every frame and moves it in about half
    of its clips (examples/pretrain_demo.py: 0.50 of 24 held-out clips); random weights never do."""
    cfg = load_config("demo")
    family, cpu, prompt = family_for(cfg.model), torch.device("cpu"), "a blue square moving"
    unet, encoders = family.load_denoiser().eval(), family.load_encoders()
    text, uncond = encoders.encode_prompt(prompt, cpu), encoders.encode_prompt(cfg.generate.negative_prompt, cpu)
    moved = []
    for seed in range(8):
        first = encoders.encode_frames(prompt_frame(prompt, seed)[None], cpu)[:, 0]  # (c, h, w)
        latents = family.sample(unet, family.sampler(cfg.generate.scheduler), first, text, uncond, cfg.data.frames, cfg.generate.steps,
                                cfg.generate.guidance, torch.Generator().manual_seed(seed), show_progress=False)
        stats = motion_stats(encoders.decode(latents))
        moved.append(stats.tracked == 1.0 and abs(stats.dx) > MOVING)
    assert sum(moved) >= 2, moved


def test_the_app_banner_says_what_the_demo_model_is(tmp_path):
    from huvi.catalogue import PresetChoice
    from huvi.jobs import Jobs
    from huvi.workspace import Workspace
    from ui.common import Context

    ws = Workspace(tmp_path / "data", tmp_path / "runs")
    banner = Context(ws, Jobs(ws.runs), PresetChoice("demo", "No CUDA GPU was found.")).banner()
    assert banner.startswith("**Demo preset** — No CUDA GPU was found. huvi uses its demo model")
    assert "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5`" in banner
