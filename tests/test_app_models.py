"""The app with either model family: the model picker (a family, then its presets with their VRAM tier
and what each gives up) and a Wan run through every tab, as tests/test_app.py takes an SD1.5 one.

One app is launched in this process on a free local port with a fresh HUVI_HOME and driven through
its API and its tabs' handlers.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app needs gradio (pip install -r requirements.txt)")
pytest.importorskip("gradio_client", reason="API tests need gradio_client (requirements-dev.txt)")

from app_helpers import REPO, served_app, wait_for_state
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from huvi.job_log import log_tail
from huvi.video import read_clip
from ui.exporting import ExportHandlers
from ui.picker import family_choices, family_of, pick_family, preset_dropdown
from ui.training import SETTING, SHOWN


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("app")) as app:
        yield app


def test_the_model_picker_lists_each_family_s_presets_with_tier_and_what_each_gives_up(served, monkeypatch):
    _, tabs, _ = served
    import torch

    assert family_choices() == [("SD1.5 + AnimateDiff", "sd15"), ("Wan 2.1 / 2.2 (experimental)", "wan")]
    wan = pick_family("wan", tabs.preset.name)  # no GPU here: the family's CPU preset, as tiny is SD1.5's
    assert wan.value == "wan-tiny" and [name for _, name in wan.choices] == ["wan-tiny", "wan21-1.3b", "wan22-5b"]
    assert ("wan21-1.3b · 12–16 GB · gives up Wan2.1-T2V-1.3B (not Wan2.2-TI2V-5B), 33 frames (not 49)", "wan21-1.3b") in wan.choices
    assert pick_family("sd15", tabs.preset.name).value == "tiny" and family_of("wan22-5b") == "wan"
    assert [name for _, name in preset_dropdown("sd15-12gb").choices] == ["demo", "tiny", "sd15-12gb", "sd15-16gb", "sd15-24gb"]
    info = tabs.train.preset_info("wan-tiny")
    assert "Wan 2.1 / 2.2 (experimental) · VRAM tier **CPU** · against `wan22-5b`, it gives up the real model (random tiny weights" in info
    assert tabs.train.preset_values("wan-tiny")[:2] == [200, 200] and tabs.train.preset_values("wan-tiny")[SETTING["dpo.beta"]] == 1000.0
    # a GPU preset: without a GPU the family's CPU preset is advised; with one, the download its weights need
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "⚠ **This machine has no CUDA GPU**: `wan21-1.3b` builds the full-size model" in tabs.train.preset_info("wan21-1.3b")
    assert "pick `wan-tiny` to try the whole flow here" in tabs.train.preset_info("wan21-1.3b")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (
        "⚠ **The weights of `wan21-1.3b` are not on this machine**: fetch them once while online (`hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers`), "
        "or pick `wan-tiny` to try the whole flow."
    ) in tabs.train.preset_info("wan21-1.3b")
    banner = tabs.ctx.banner()
    assert "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5` and `hf download guoyww/animatediff-motion-adapter-v1-5-2`" in banner
    assert banner.endswith("Pick the model family and its preset in the **4 · Train** tab: each preset says its VRAM tier and what it gives up.")


def test_a_wan_run_through_every_tab(served, tmp_path):
    """The Wan family as SD1.5's in tests/test_app.py: wan-tiny picked and trained a few steps with held-out
    pairs and previews, then shown (the form, plots, previews, the Runs tab), generated with a first frame
    held, exported in both its formats and used for a DenseDPO aligned pair."""
    ws, tabs, client = served
    shutil.copytree(REPO / "data" / "demo", ws.categories / "wan-demo")
    run, preset = "wan-api", pick_family("wan", tabs.preset.name).value
    values = tabs.train.preset_values(preset)
    values[:4] = [3, 3, 0, 3]  # steps of each stage, seed, a preview every 3 steps
    values[SETTING["data.holdout"]] = 0.25  # held-out pairs: scored at the last DPO step
    client.predict("wan-demo", run, preset, "both", "clip", *values, "", "", api_name="/start_training")
    status = wait_for_state(client, run)
    assert status["state"] == "finished", status["message"] + log_tail(ws.runs / run)
    assert status["command"].endswith("--preset wan-tiny --set motion.steps=3 --set dpo.steps=3 --set generate.preview_every=3 --set data.holdout=0.25")

    # 4 · Train: the form follows the run (its family's presets), the plots and previews are the run's
    form = tabs.train.form_from_run(run)
    assert form[1].value == "wan-tiny" and [name for _, name in form[1].choices] == ["wan-tiny", "wan21-1.3b", "wan22-5b"]
    shown = dict(zip(SHOWN, tabs.train.poll(run, {})[0]))
    assert shown["status"].startswith(f"### ✔ done — `{run}`") and shown["motion_loss"].visible and shown["dpo_loss"].visible
    assert "held-out pairs" in {row[-1] for row in shown["accuracy"].value["data"]}
    previews = tabs.train.previews(ws.runs / run)
    assert [caption for _, caption in previews] == ["motion · step 3", "dpo · step 3"]
    assert read_clip(Path(previews[0][0]), None, None).shape == (9, 64, 64, 3)  # wan-tiny's 9 frames at 64x64
    table = tabs.runs.runs_table().set_index("run")
    assert (table.loc[run, "state"], table.loc[run, "preset"], table.loc[run, "steps"]) == ("finished", "wan-tiny", "3 motion + 3 dpo")
    assert table.loc[run, "held-out accuracy"] != ""
    clip = min((ws.categories / "wan-demo" / "clips").iterdir()).name
    assert "a training clip is **9 of them in a row**" in tabs.clips.training_view("wan-demo", clip, preset)[2]

    # 5 · Generate: the user's first frame is the one used, and frame 0 is held at it whatever the seed
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32], image[:, 32:] = (230, 40, 40), (40, 40, 230)
    Image.fromarray(image).save(tmp_path / "first.png")
    assert "tiny preset's random SDXL" in tabs.generate.run_defaults(run)[3].label  # without one: wan-tiny's own tiny SDXL

    def generate(seed: int, compare: bool):
        video, compared, used, note = client.predict(run, "a square sliding", handle_file(str(tmp_path / "first.png")), seed, 2, 0, 1.0, 1.0, compare, api_name="/generate")
        assert np.array_equal(np.asarray(Image.open(used).convert("RGB")), image) and note.startswith("Saved to")
        return read_clip(Path(video["video"] if isinstance(video, dict) else video), None, None), compared

    one, compared = generate(1, True)
    two, _ = generate(2, False)
    assert one.shape == (9, 64, 64, 3) and compared
    gap = np.abs(one.astype(int) - two.astype(int)).mean(axis=(1, 2, 3))  # per frame, between the seeds (0-255, through H.264)
    assert gap[0] < 0.05 and gap[1:].max() > 0.5, gap
    assert [(caption.split(" · ")[0]) for _, caption in tabs.generate.samples(run)] == ["seed 2", "seed 1"]

    # 6 · Export: the Wan formats only, each with its zip
    assert tabs.ctx.trained_runs() == [run] and ExportHandlers(tabs.ws, tabs.jobs, tabs.preset).format_choices(run) == ["diffusers", "comfy"]
    for fmt in ("diffusers", "comfy"):
        _, card, _, download = client.predict(run, fmt, False, api_name="/export")
        with zipfile.ZipFile(Path(download["value"] if isinstance(download, dict) else download)) as archive:
            assert f"{run}-{fmt}.safetensors" in archive.namelist() and "config.yaml" in archive.namelist()
        assert "Wan" in card
    with pytest.raises(AppError, match="kohya"):
        client.predict(run, "kohya", False, api_name="/export")

    # DenseDPO: an aligned pair made with the Wan run, its segments whole latent frames (4 video frames each)
    labels = tabs.labels
    assert run in labels.runs() and labels.segment_count(run).label == "Segments per pair (the run's: 8 frames / 4 = 2)"
    [made] = client.predict("wan-demo", run, [clip], 0.75, 0, 0, api_name="/make_aligned_pairs")
    assert made["segments"] == [None, None] and made["aligned"]["run"] == str(ws.runs / run)
    video, timeline, _ = labels.view("wan-demo", labels.pair_dropdown("wan-demo").value)
    assert Path(video).is_file() and timeline.count('class="huvi-seg"') == 2
    assert 'title="frames 0–14 ' in timeline and 'title="frames 15–26 ' in timeline  # source frames (stride 3): video frames 0-4, 5-8
