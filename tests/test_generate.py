"""Generation: first frames (image or tiny DPO-SDXL), first-frame-held sampling, the CLI, previews,
and the quality figures of `metrics`."""

from __future__ import annotations

import json
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import metric_rows, tiny_config
from PIL import Image
from test_cli import run_module

from huvi.adapters import DPO, MOTION, load_adapter
from huvi.cli import main
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.families.sd15.diffusion import predict
from huvi.families.sd15.models import encode_frames, load_encoders, load_scheduler, load_unet
from huvi.families.sd15.sampling import (
    SCHEDULERS,
    decode_latents,
    guided,
    make_scheduler,
    sample_latents,
)
from huvi.first_frame import SDXL_BUCKETS, load_image, sdxl_size
from huvi.generate import GenerateRequest, generate, set_strengths
from huvi.metrics import ssim, temporal_consistency
from huvi.previews import list_previews
from huvi.runs import Run


def test_sdxl_size_picks_the_nearest_bucket_at_the_asked_area():
    assert sdxl_size(512, 320) == (1344, 768)  # 1.6 is nearer 1.75 than 1.46 in log space
    assert sdxl_size(512, 512) == (1024, 1024)
    assert sdxl_size(320, 512) == (768, 1344)
    w, h = sdxl_size(32, 32, area=64 * 64, multiple=8)
    assert (w, h) == (64, 64)
    for width, height in [(640, 360), (256, 256), (300, 900)]:
        w, h = sdxl_size(width, height)
        assert (w, h) in SDXL_BUCKETS and w % 64 == 0 and h % 64 == 0


def test_guidance_combines_the_two_branches():
    uncond, cond = torch.randn(2, 1, 4, 3, 2, 2).unbind(0)
    out = guided(torch.cat([uncond, cond]), 7.5)
    torch.testing.assert_close(out, uncond + 7.5 * (cond - uncond))
    torch.testing.assert_close(guided(torch.cat([uncond, cond]), 1.0), cond)


@pytest.fixture(scope="module")
def tiny_parts():
    cfg = tiny_config()
    encoders = load_encoders(cfg.model)
    return cfg, load_unet(cfg.model), encoders, load_scheduler(cfg.model)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_sampling_holds_frame_zero_at_the_clean_latent(tiny_parts, name):
    _, unet, _, train_scheduler = tiny_parts
    first = torch.randn(4, 16, 16)
    text, uncond = torch.randn(77, 32), torch.zeros(77, 32)
    latents = sample_latents(
        unet, make_scheduler(name, train_scheduler), first, text, uncond, 5, 3, 5.0, torch.Generator().manual_seed(0), show_progress=False
    )
    assert latents.shape == (1, 4, 5, 16, 16)
    assert torch.equal(latents[0, :, 0], first)
    assert torch.isfinite(latents).all() and not torch.allclose(latents[0, :, 1], latents[0, :, 2])


def test_sampling_is_seeded_and_reports_progress(tiny_parts):
    _, unet, _, train_scheduler = tiny_parts
    first, text, uncond = torch.randn(4, 16, 16), torch.randn(77, 32), torch.zeros(77, 32)
    seen = []

    def run(seed, progress=None):
        return sample_latents(
            unet, make_scheduler("ddim", train_scheduler), first, text, uncond, 4, 3, 2.0, torch.Generator().manual_seed(seed),
            progress, show_progress=False,
        )

    assert torch.equal(run(1, lambda i, n: seen.append((i, n))), run(1))
    assert not torch.equal(run(1), run(2))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_decoded_frame_zero_is_the_first_frame_through_the_vae(tiny_parts):
    _, unet, encoders, train_scheduler = tiny_parts
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    first = encode_frames(encoders.vae, image[None], torch.device("cpu"))[:, 0]  # (c, h, w)
    latents = sample_latents(
        unet, make_scheduler("ddim", train_scheduler), first, torch.randn(77, 32), torch.zeros(77, 32), 4, 2, 3.0,
        torch.Generator().manual_seed(0), show_progress=False,
    )
    frames = decode_latents(encoders.vae, latents)
    round_trip = decode_latents(encoders.vae, first[None, :, None])[0]
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], round_trip)


def test_dpo_strength_zero_is_the_motion_only_model(trained_run):
    unet = load_unet(trained_run.cfg.model)
    for name in (MOTION, DPO):
        load_adapter(unet, Run(trained_run.root).adapter_path(name), name)
    with torch.no_grad():
        for p in (p for n, p in unet.named_parameters() if ".dpo." in n and "lora_B" in n):
            p.normal_(0, 0.1)  # a visible DPO update, so the comparison can fail
    unet.eval()
    noisy, t, text = torch.randn(1, 4, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)

    def out(strengths):
        set_strengths(unet, strengths)
        with torch.no_grad():
            return predict(unet, noisy, t, text)

    motion_only = out({MOTION: 1.0})
    torch.testing.assert_close(out({MOTION: 1.0, DPO: 0.0}), motion_only)
    assert not torch.allclose(out({MOTION: 1.0, DPO: 1.0}), motion_only, atol=1e-4)


def _frames(path) -> np.ndarray:
    return iio.imread(path)


def test_generate_from_an_image_writes_clip_first_frame_and_comparison(trained_run, tmp_path):
    cfg = trained_run.cfg
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "first.png")
    result = generate(trained_run.root, GenerateRequest("a square", first_frame=tmp_path / "first.png", seed=3, compare=True), tmp_path / "out.mp4", show_progress=False)
    clip, without, side = _frames(result.video), _frames(result.without_dpo), _frames(result.compare)
    assert clip.shape == (cfg.data.frames, cfg.data.height, cfg.data.width, 3)
    assert without.shape == clip.shape
    assert side.shape == (cfg.data.frames, cfg.data.height, 2 * cfg.data.width + 4, 3)
    fitted = load_image(tmp_path / "first.png", cfg.data.width, cfg.data.height)
    assert np.array_equal(np.asarray(Image.open(result.first_frame)), fitted)
    settings = json.loads(result.settings.read_text())  # what made the clip, beside it
    assert settings == {
        "prompt": "a square", "first_frame": str(tmp_path / "first.png"), "seed": 3, "steps": cfg.generate.steps,
        "guidance": cfg.generate.guidance, "dpo_scale": 1.0, "motion_scale": 1.0, "compare": True,
    }
    # Frame 0 is the image through the VAE, then H.264 with 4:2:0 chroma (lossy on the tiny VAE's
    # noisy output): it is nearer that round trip than any later frame is. The exact equality,
    # before encoding, is test_decoded_frame_zero_is_the_first_frame_through_the_vae.
    vae = load_encoders(cfg.model).vae
    round_trip = decode_latents(vae, encode_frames(vae, fitted[None], torch.device("cpu"))[None])[0].astype(float)
    errors = [np.abs(frame.astype(float) - round_trip).mean() for frame in clip]
    assert errors[0] < min(errors[1:])


def test_cli_generate_draws_the_first_frame_with_dpo_sdxl(trained_run, tmp_path):
    out = tmp_path / "clip.mp4"
    proc = run_module("generate", "--run", str(trained_run.root), "--prompt", "a red square", "--seed", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    cfg = trained_run.cfg
    assert _frames(out).shape == (cfg.data.frames, cfg.data.height, cfg.data.width, 3)
    assert (tmp_path / "clip.first.png").is_file()
    assert json.loads(proc.stdout.strip().splitlines()[-1])["video"] == str(out)


def test_generate_refusals_are_one_sentence(trained_run, tmp_path, capsys):
    motion_only = tmp_path / "motion_only"
    shutil.copytree(trained_run.root, motion_only)
    (motion_only / "adapters" / "dpo.safetensors").unlink()
    (tmp_path / "not_an_image.png").write_text("hello")
    cases = [
        (["--run", str(motion_only), "--compare"], "no DPO adapter"),
        (["--run", str(tmp_path / "nowhere")], "not a huvi run folder"),
        (["--run", str(trained_run.root), "--first-frame", str(tmp_path / "not_an_image.png")], "not an image"),
        (["--run", str(trained_run.root), "--first-frame", str(tmp_path / "missing.png")], "not found"),
    ]
    for args, message in cases:
        assert main(["generate", "--prompt", "a square", "--out", str(tmp_path / "x.mp4"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["generate", "--run", str(trained_run.root), "--prompt", "a", "--out", str(tmp_path / "x.avi")]) == 2
    with pytest.raises(HuviError, match="prompt"):
        GenerateRequest("  ")
    assert not (tmp_path / "x.mp4").exists()


def test_the_loaded_model_is_kept_between_requests_until_the_run_changes(trained_run, tmp_path, monkeypatch):
    """The app's Generate tab: a second clip from the same run reuses the loaded model (no second
    load); new adapters (a resumed run) or a release (training takes the GPU) load it anew."""
    import huvi.generate as generate_module
    from huvi.model_cache import ModelCache

    loads = []

    class CountingRunModel(generate_module.RunModel):
        def __init__(self, *args, **kwargs):
            loads.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(generate_module, "RunModel", CountingRunModel)
    run = tmp_path / "run"
    shutil.copytree(trained_run.root, run)
    models = ModelCache()
    first = models.get(run)
    image = tmp_path / "first.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    first.generate(GenerateRequest("a square", first_frame=image), tmp_path / "a.mp4", show_progress=False)
    assert models.get(run) is first and len(loads) == 1

    dpo = Run(run).adapter_path(DPO)
    dpo.write_bytes(dpo.read_bytes())  # rewritten, as a resumed run rewrites its adapters
    os.utime(dpo, ns=(dpo.stat().st_atime_ns, dpo.stat().st_mtime_ns + 1_000_000))
    second = models.get(run)
    assert second is not first and len(loads) == 2
    models.release()
    assert models.get(run) is not second and len(loads) == 3


def test_previews_are_written_and_change_nothing_else(trained_run, category, tmp_path):
    from huvi.trainer import train

    cfg = tiny_config()
    cfg.generate.preview_every = 3
    cfg.generate.preview_prompts = ["a circle sliding"]  # a second clip per preview
    train(cfg, category, tmp_path / "run", show_progress=False)
    previews = sorted(p.name for p in (tmp_path / "run" / "previews").iterdir())
    assert previews == ["dpo-000003.mp4", "dpo-000003.p1.mp4", "motion-000003.mp4", "motion-000003.p1.mp4"]
    listed = [(c.stage, c.step, c.prompt) for c in list_previews(tmp_path / "run")]
    assert listed == [("motion", 3, 0), ("motion", 3, 1), ("dpo", 3, 0), ("dpo", 3, 1)]  # training order
    assert not np.array_equal(_frames(tmp_path / "run" / "previews" / "dpo-000003.p1.mp4"), _frames(tmp_path / "run" / "previews" / "dpo-000003.mp4"))
    assert _frames(tmp_path / "run" / "previews" / previews[0]).shape[0] == cfg.data.frames
    with pytest.raises(HuviError, match="generate.preview_prompts must be a list of prompts"):
        load_config("tiny", ["generate.preview_prompts=a cat"])
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in metric_rows(tmp_path / "run")]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in metric_rows(trained_run.root)]


# metrics ----------------------------------------------------------------------------------------
def test_ssim_and_mse_of_known_clips():
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8), 4, axis=0)
    figures = temporal_consistency(still)
    assert figures["ssim"] == pytest.approx(1.0, abs=1e-6) and figures["mse"] == 0.0
    flicker = np.stack([np.zeros((24, 24, 3), np.uint8), np.full((24, 24, 3), 255, np.uint8)] * 2)
    figures = temporal_consistency(flicker)
    assert figures["mse"] == pytest.approx(1.0) and figures["ssim"] < 0.01
    noisy = np.clip(still.astype(int) + rng.integers(-40, 41, still.shape), 0, 255).astype(np.uint8)
    assert 0.2 < temporal_consistency(noisy)["ssim"] < 0.95
    a = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    b = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(ssim(a, b), ssim(b, a))
    with pytest.raises(HuviError):
        temporal_consistency(still[:1])


def test_cli_metrics_prints_one_json_line_per_video(tmp_path, capsys):
    from huvi.video import write_clip

    rng = np.random.default_rng(0)
    clips = []
    for i in range(2):
        clips.append(tmp_path / f"v{i}.mp4")
        write_clip(clips[-1], rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    assert main(["metrics", *map(str, clips), "--prompt", "a square", "--clip-model", str(tmp_path / "no-clip")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["video"] for r in rows] == [str(c) for c in clips]
    for row in rows:
        assert row["frames"] == 5 and 0 <= row["ssim"] <= 1 and row["mse"] > 0
        assert row["clip_score"] is None and "not on this machine" in row["clip_score_note"]
    (tmp_path / "broken.mp4").write_text("not a video")
    assert main(["metrics", str(tmp_path / "broken.mp4")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
