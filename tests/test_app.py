"""The Gradio app through its API (gradio_client), and its handlers' pure parts.

One app is launched in this process on a free local port with a fresh HUVI_HOME; its named
endpoints are driven the way a script would drive them: make a category, upload and rate clips,
train a tiny run in the background and poll it, export and generate with it.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `ui` sits beside `huvi` at the repository root

gr = pytest.importorskip("gradio", reason="the app needs gradio (pip install -r requirements.txt)")
gradio_client = pytest.importorskip("gradio_client", reason="API tests need gradio_client (requirements-dev.txt)")

from app_helpers import served_app, wait_for_state
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from helpers import BUSY

from huvi.job_log import log_tail
from huvi.jobs import JobStatus, progress
from huvi.pairs import form_pairs
from huvi.synthetic import moving_square
from huvi.video import write_clip
from ui.plots import metric_plots
from ui.training import TRAIN_SETTINGS, TrainHandlers

SETTINGS_FOR_3_STEPS = [3, 3, 0, 0, 5000, 1e-3, 1e-3, 0.0, 32, 16, 2]  # steps, seed, previews, beta, lrs, holdout, ranks, rating gap (tiny)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_app(tmp_path_factory.mktemp("app")) as app:
        yield app


def uploads(folder: Path, count: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip {i}.mp4"
        write_clip(path, moving_square(1 if i % 2 == 0 else -1, seed=200 + i, frames=32, size=32))
        paths.append(path)
    return paths


# the library stays free of the UI ----------------------------------------------------------------
def test_huvi_never_imports_gradio():
    """Read from the source (importing every module would take seconds): no import of gradio in huvi/."""
    found = []
    for path in sorted((REPO / "huvi").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(REPO)}: {name}" for name in names if name.split(".")[0] in ("gradio", "gradio_client")]
    assert found == []


def test_app_py_help_names_host_port_share():
    out = subprocess.run([sys.executable, str(REPO / "app.py"), "--help"], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--host", "--port", "--share"):
        assert flag in out.stdout
    assert "127.0.0.1" in out.stdout


# handlers without a server -----------------------------------------------------------------------
def test_each_stage_has_its_own_loss_plot_on_its_own_step_axis():
    rows = [{"stage": "motion", "step": s, "loss": 1.0 / s} for s in range(1, 4)]
    rows += [{"stage": "dpo", "step": s, "loss": 0.69, "accuracy": s % 2, "reward_margin": 0.1 * s, "loss_w": 0.2, "loss_l": 0.3, "ref_loss_w": 0.2, "ref_loss_l": 0.25, "health": ["ok"]} for s in range(1, 3)]
    rows[-1]["val_accuracy"] = 0.75
    plots = metric_plots(rows, {"motion": 200, "dpo": 300}, held_out=True)
    assert set(plots) == {"motion_loss", "dpo_loss", "accuracy", "margin", "health"}
    assert list(dict.fromkeys(plots["motion_loss"].frame["series"])) == ["motion loss", "motion loss (mean of 20)"]
    assert list(dict.fromkeys(plots["dpo_loss"].frame["series"])) == ["DPO loss", "DPO loss (mean of 20)"]
    assert plots["dpo_loss"].frame["step"].tolist() == [1, 2, 1, 2]  # DPO's own steps, not after motion's
    assert (plots["motion_loss"].x_lim, plots["dpo_loss"].x_lim, plots["accuracy"].x_lim) == ([0, 200], [0, 300], [0, 300])  # whole steps to the planned end
    assert plots["accuracy"].y_lim == [0, 1]
    assert list(dict.fromkeys(plots["accuracy"].frame["series"])) == ["training pairs (mean of 20)", "held-out pairs"]
    assert plots["accuracy"].frame.query("series == 'held-out pairs'")["value"].tolist() == [0.75]
    assert set(plots["health"].frame["series"]) == {"winner", "loser", "winner, reference", "loser, reference"}
    assert all(metric_plots([], {"motion": 1, "dpo": 1})[key].empty for key in plots)
    assert "DPO loss" not in set(metric_plots(rows[:3], {"motion": 3})["dpo_loss"].frame.get("series", []))

    # Before any held-out score: its series is already named (one empty row), so the browser's plot
    # gives it a colour from the start.
    early = metric_plots(rows[:4], {"motion": 3, "dpo": 2}, held_out=True)["accuracy"].frame
    held = early.query("series == 'held-out pairs'")
    assert len(held) == 1 and held["value"].isna().all()


def test_the_train_tab_says_when_dpo_goes_wrong(tmp_path):
    """The status above the plots carries the health signs of the newest DPO row and the adapter kept."""
    rows = [{"stage": "dpo", "step": 40, "loss": 2.0, "accuracy": 0.0, "health": ["accuracy fell"], "best_step": 20}]
    status = JobStatus(tmp_path, "running", "Training.", progress([], {"dpo": 100}), True, False, "")
    text = TrainHandlers.status_markdown(status, rows)
    assert "⚠ DPO health at step 40: training accuracy fell from its peak. To fix: lower dpo.learning_rate" in text
    assert "Best held-out adapter so far: step 20; it becomes the final DPO adapter." in text
    assert "health" not in TrainHandlers.status_markdown(status, rows[:0])


def test_a_few_dpo_spikes_do_not_flatten_the_loss_curve():
    rows = [{"stage": "dpo", "step": s, "loss": 30.0 if s in (7, 40) else 0.6 + 0.001 * s} for s in range(1, 101)]
    plot = metric_plots(rows, {"dpo": 100})["dpo_loss"]
    low, high = plot.y_lim
    assert low == 0 and 0.7 < high < 10  # the bulk fills the plot; the spikes are cut
    assert plot.title == "DPO loss — 2 spikes beyond the y-range"
    calm = metric_plots([{"stage": "motion", "step": s, "loss": 1.0 - 0.01 * s} for s in range(1, 50)], {"motion": 50})["motion_loss"]
    assert calm.y_lim is None and calm.title == "Motion loss"  # nothing to cut: fitted to every point
    short = metric_plots(rows[:10], {"dpo": 100})["dpo_loss"]
    assert short.y_lim is None and short.title == "DPO loss"  # 10 steps: too few to tell a spike from the curve


def test_log_tail_keeps_a_progress_bar_s_last_state(tmp_path):
    (tmp_path / "job.log").write_text("start\nmotion:  10%|#   \rmotion:  50%|#####\rmotion: 100%|##########\nerror: bad\n")
    assert log_tail(tmp_path) == "start\nmotion: 100%|##########\nerror: bad"


def test_the_train_settings_default_to_the_tiny_preset(served):
    _, tabs, _ = served
    h = tabs.train
    assert len(TRAIN_SETTINGS) == len(SETTINGS_FOR_3_STEPS)
    assert h.preset_values("tiny") == [200, 200, *SETTINGS_FOR_3_STEPS[2:]]  # the tests' settings are tiny's with 3 steps
    assert "CPU preset" in h.preset_info("tiny") and "This machine's default." in h.preset_info("tiny")
    assert h.preset_info("sd15-12gb").startswith("**sd15-12gb** — 12 GB cards")


def test_a_gpu_preset_picked_on_a_cpu_gets_a_warning(served, monkeypatch):
    _, tabs, _ = served
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "⚠ **This machine has no CUDA GPU**: `sd15-24gb` builds the full-size model" in tabs.train.preset_info("sd15-24gb")
    assert "no CUDA GPU" not in tabs.train.preset_info("tiny") and "no CUDA GPU" not in tabs.train.preset_info("demo")
    monkeypatch.setattr("ui.training.cpu_load", lambda: (2, 1.6))  # another job keeps 1.6 of 2 cores busy
    assert "other work keeps about 1.6 of them busy now, so a job trains on 1 core" in tabs.train.preset_info("tiny")


def test_the_category_tab_advises_8_to_16_clips(served):
    ws, tabs, _ = served
    h = tabs.clips
    root = ws.create_category("counts", "a square")
    assert "No clips yet" in h.clip_summary("counts")
    for count, advice in ((3, "Add 5 more"), (8, "Within the 8–16"), (17, "More than the 8–16")):
        for i in range(len(list((root / "clips").iterdir())), count):
            (root / "clips" / f"c{i:02d}.mp4").write_bytes(b"x")  # only counted here, never decoded
        assert f"**{count} clips**" in h.clip_summary("counts") and advice in h.clip_summary("counts")


def test_only_changed_settings_become_set_overrides(served):
    _, tabs, _ = served
    h = tabs.train
    values = h.preset_values("tiny")
    command = h.command("demo", "r1", "tiny", "both", "clip", *values, "", "")
    assert command.startswith("python -m huvi train --category ") and command.endswith(" --preset tiny")  # nothing changed: no --set
    changed = list(values)
    changed[0], changed[4] = 5, 2500.0
    command = h.command("demo", "r1", "tiny", "motion", "clip", *changed, "data.hflip=true\n--set dpo.adapter.rank=8\n# a comment", "")
    assert command.endswith("--preset tiny --stage motion --set motion.steps=5 --set dpo.beta=2500.0 --set data.hflip=true --set dpo.adapter.rank=8")
    assert h.command("demo", "r1", "tiny", "both", "clip", *values, "dpo.nope=1", "").startswith("# Unknown setting dpo.nope")
    assert h.command("demo", "bad name", "tiny", "both", "clip", *values, "", "").startswith("# Run name 'bad name' is not allowed")
    command = h.command("demo", "r1", "tiny", "both", "clip", *values, "", "a cat jumping\n\n  a dog  ")
    assert command.endswith(""" --set 'generate.preview_prompts=["a cat jumping", "a dog"]'""")


def test_the_train_form_is_filled_from_the_run_shown(served, tmp_path):
    """A run started elsewhere (its config.yaml and run.json only): the form takes its category, preset,
    stages, mode and every setting, and a new run name; its `train` line is rebuilt from config.yaml."""
    ws, tabs, _ = served
    from huvi.config import load_config
    from huvi.runs import Run
    from huvi.train_command import first_command

    run = ws.runs / "from-a-shell"
    settings = ["motion.steps=7", "dpo.steps=9", "seed=4", "dpo.beta=2500", "data.hflip=true", "generate.preview_prompts=[\"a cat\", \"a dog\"]"]
    cfg = load_config("tiny", settings + ["dpo.mode=dense"])
    Run(run).root.mkdir(parents=True)
    Run(run).write_config(cfg)
    Run(run).write_info({"category": str(ws.categories / "demo"), "prompt": "a square"})
    form = tabs.train.form_from_run("from-a-shell")
    category, preset, stage, mode, *rest = form
    *values, extra, prompts, run_name, note = rest
    assert (category.value, preset.value, stage, mode) == ("demo", "tiny", "both", "dense")
    assert values == [7, 9, 4, 0, 2500.0, 1e-3, 1e-3, 0.0, 32, 16, 2]
    assert (extra, prompts) == ("data.hflip=true", "a cat\na dog")
    assert run_name.startswith("demo-") and run_name != "from-a-shell" and "settings of **from-a-shell**" in note
    argv = shlex.split(first_command(run, None))
    assert argv[:4] == ["python", "-m", "huvi", "train"] and argv[argv.index("--mode") + 1] == "dense"
    sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    assert load_config("tiny", sets + ["dpo.mode=dense"]) == cfg  # the line trains exactly this config again
    assert tabs.train.form_from_run("no-such-run")[-2].startswith("demo-")  # nothing to copy: defaults and a fresh name


# through the API ---------------------------------------------------------------------------------
def test_the_api_names_its_endpoints(served):
    _, _, client = served
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {
        "/create_category", "/save_prompt", "/add_clips", "/check_category", "/list_clips", "/set_score", "/remove_clip",
        "/pairs", "/start_training", "/stop_training", "/resume_training", "/job_status", "/generate", "/export",
        "/make_aligned_pairs", "/label_segment",
    }
    assert expected <= named, expected - named


def test_make_upload_rate_check_and_remove(served, tmp_path):
    ws, tabs, client = served
    client.predict("squares", "a square sliding", api_name="/create_category")
    assert (ws.categories / "squares" / "category.json").is_file()
    with pytest.raises(AppError, match="already exists"):
        client.predict("squares", "again", api_name="/create_category")
    with pytest.raises(AppError, match="is not allowed"):
        client.predict("../up", "x", api_name="/create_category")
    client.predict("My Bunny Clips", "a rabbit in a meadow", api_name="/create_category")  # spaces become '-'
    assert json.loads((ws.categories / "My-Bunny-Clips" / "category.json").read_text())["prompt"] == "a rabbit in a meadow"

    files = uploads(tmp_path / "up")
    summary, _, report = client.predict("squares", [handle_file(str(p)) for p in files], "tiny", api_name="/add_clips")  # (summary, cleared upload, report)
    assert "**4 clips** in `squares`" in summary and "Add 4 more" in summary
    assert report.startswith("✔ Added 4 clips: `clip_0.mp4`") and "Refused" not in report
    clips = client.predict("squares", api_name="/list_clips")
    assert [c["name"] for c in clips] == [f"clip_{i}.mp4" for i in range(4)]
    assert [(c["score"], c["frames"], c["width"], c["height"], c["generated"]) for c in clips] == [(None, 32, 32, 32, False)] * 4
    for clip, score in zip(clips, (5, 1, 4, 2)):
        summary = client.predict("squares", clip["name"], score, api_name="/set_score")
    assert "4 rated" in summary and "4 preference pairs" in summary and "Ready to train" in summary  # at tiny's rating gap 2: no 5-4, 2-1
    with pytest.raises(AppError, match="whole number from 1 to 5"):
        client.predict("squares", "clip_0.mp4", 7, api_name="/set_score")
    report = client.predict("squares", "tiny", api_name="/check_category")
    assert report.startswith("✔ Every clip decodes")

    # the pairs in the order a run with that seed trains on them, and the clips left out
    scores = dict(zip([c["name"] for c in clips], (5, 1, 4, 2)))
    pairs = client.predict("squares", 3, 1, api_name="/pairs")  # at data.min_rating_gap 1: any two different ratings
    assert pairs["count"] == 6 and [(p["winner"], p["loser"]) for p in pairs["pairs"]] == [(p.winner, p.loser) for p in form_pairs(scores, 3)]
    assert all(p["winner_score"] > p["loser_score"] for p in pairs["pairs"])
    assert (pairs["unrated"], pairs["ties"], pairs["unpaired"]) == ([], {}, [])
    head, table, _ = tabs.pairs.pairs_view("squares", 3, 0.2)  # the tab: every pair, each clip with its thumbnail
    assert "**6 preference pairs**" in head and "the first 1 held out" in head
    assert table.count("<tr class=") == 6 and table.count("<img src=\"/gradio_api/file=") == 12
    assert (ws.categories / "squares" / ".huvi" / "thumbs" / "clip_0.mp4.png").is_file()
    head, _, left_out = tabs.pairs.pairs_view("squares", 3, 0, 2)  # the Train tab's rating gap at 2: 5-4 and 2-1 left out
    assert "**4 preference pairs**" in head and "**Ratings less than 2★ apart never pair**" in left_out and "2 combinations" in left_out
    gapped = client.predict("squares", 3, api_name="/pairs")  # at this machine's preset's gap: tiny's 2
    assert (gapped["count"], gapped["min_gap"], gapped["close_combinations"]) == (4, 2, 2)
    client.predict("squares", "clip_1.mp4", 5, api_name="/set_score")  # a tie with clip_0
    client.predict("squares", "clip_2.mp4", 0, api_name="/set_score")  # 0 clears a rating
    pairs = client.predict("squares", 3, api_name="/pairs")
    assert pairs["count"] == 2 and pairs["unrated"] == ["clip_2.mp4"]  # 5, 5, unrated, 2
    assert pairs["ties"] == {"5": ["clip_0.mp4", "clip_1.mp4"]} and pairs["tied_combinations"] == 1

    summary = client.predict("squares", "clip_3.mp4", api_name="/remove_clip")
    assert "**3 clips**" in summary and "Add 5 more" in summary
    pairs = client.predict("squares", 3, api_name="/pairs")
    assert pairs["count"] == 0 and pairs["unpaired"] == ["clip_0.mp4", "clip_1.mp4"]  # both 5: nothing to beat
    summary = client.predict("squares", "a square sliding right", api_name="/save_prompt")
    assert json.loads((ws.categories / "squares" / "category.json").read_text())["prompt"] == "a square sliding right"


def test_a_bad_upload_is_refused_with_its_sentence(served, tmp_path):
    ws, _, client = served
    client.predict("refusals", "a square", api_name="/create_category")
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 10)
    good = uploads(tmp_path / "ok", 1)[0]
    summary, _, report = client.predict("refusals", [handle_file(str(bad)), handle_file(str(good))], "tiny", api_name="/add_clips")
    assert "**1 clip** in `refusals`" in summary  # the good one is kept
    assert "✔ Added 1 clip: `clip_0.mp4`" in report
    assert "✖ Refused 1 file (the others were kept):\n- notes.mp4: could not be decoded as a video" in report
    assert [p.name for p in (ws.categories / "refusals" / "clips").iterdir()] == ["clip_0.mp4"]


def test_train_in_the_background_then_export_and_generate(served, tmp_path):
    ws, tabs, client = served
    run = "demo-api"
    with pytest.raises(AppError, match="Unknown setting dpo.nope"):
        client.predict("demo", run, "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "dpo.nope=1", "", api_name="/start_training")
    client.predict("demo", run, "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "", "", api_name="/start_training")
    started = client.predict(run, api_name="/job_status")
    assert started["state"] in ("starting", "running", "finished") and started["total"] == 6
    assert started["command"].endswith("--preset tiny --set motion.steps=3 --set dpo.steps=3")
    if started["state"] != "finished":  # one GPU job at a time: a second run, or a video, is refused with a sentence
        with pytest.raises(AppError, match=rf"{BUSY} is busy \(training {run}\); one job runs at a time"):
            client.predict("demo", "demo-second", "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "", "", api_name="/start_training")
        with pytest.raises(AppError, match=rf"{BUSY} is busy \(training {run}\)"):
            client.predict(run, "a square", None, 0, 2, 0, 1.0, 1.0, False, api_name="/generate")
        assert tabs.generate.gpu_note().startswith(f"⚠ **{BUSY} is busy (training {run}).**")
    status = wait_for_state(client, run)
    assert status["state"] == "finished", status["message"] + log_tail(ws.runs / run)
    assert (status["done"], status["total"]) == (6, 6) and status["elapsed_seconds"] > 0
    assert tabs.ctx.trained_runs() == [run] and tabs.generate.gpu_note() == ""
    assert tabs.generate.run_prompt(run) == "a square sliding across the frame"

    # the zip of the export first, then the LoRA files and the card, each downloadable
    files, card, metadata, download = client.predict(run, "diffusers", False, api_name="/export")
    paths = [Path(f["value"] if isinstance(f, dict) else f) for f in files]
    assert [p.suffix for p in paths] == [".zip", ".safetensors", ".safetensors", ".md"], paths
    assert paths[-1].name == "README.md" and "| Setting | Value |" in paths[-1].read_text()  # a card with a header row
    assert card.strip() and metadata
    with zipfile.ZipFile(Path(download["value"] if isinstance(download, dict) else download)) as archive:
        assert sorted(archive.namelist()) == sorted([f"{run}-diffusers.safetensors", f"{run}-diffusers.motion.safetensors", "README.md", "config.yaml", "run.json"])

    video, compare, frame, note = client.predict(run, "a square sliding", None, 3, 2, 0, 1.0, 1.0, True, api_name="/generate")
    assert Path(video["video"] if isinstance(video, dict) else video).is_file()
    assert compare and Path(frame).is_file() and note.startswith("Saved to")
    # the sample history: what made each clip, and its settings back in the form
    [(_, caption)] = tabs.generate.samples(run)
    assert caption == "seed 3 · 2 steps · DPO 1.0 · 'a square sliding'"
    prompt, seed, steps, guidance, dpo, motion = tabs.generate.reuse_sample(run, gr.SelectData(None, {"index": 0, "value": None}))
    assert (prompt, seed, steps, dpo, motion) == ("a square sliding", 3, 2, 1.0, 1.0) and guidance > 1
    prompt, steps, guidance, frame_box = tabs.generate.run_defaults(run)  # the run's own values, not "0: the preset's"
    assert (steps.value, steps.label, guidance.label) == (10, "Steps (the run's: 10)", "Guidance (the run's: 7.5)")
    assert "tiny preset's random SDXL" in frame_box.label


def test_the_dense_tab_makes_labels_and_shows_aligned_pairs(served):
    """After the run above: aligned pairs made with it, labelled through the API and the tab's
    handlers, shown side by side over the segment timeline, then trained on with --mode dense."""
    ws, tabs, client = served
    run = "demo-api"
    assert run in tabs.ctx.trained_runs(), "runs after test_train_in_the_background_then_export_and_generate"
    labels = tabs.labels
    assert labels.runs() == [run] and labels.segment_count(run).value == 6  # the run's 24 frames / 4 per segment
    rate_summary = tabs.rate.summary("demo")
    source = min(json.loads((ws.categories / "demo" / "category.json").read_text())["scores"])
    [made] = client.predict("demo", run, [source], 0.75, 3, 2, api_name="/make_aligned_pairs")  # 2 segments, not the run's 6
    a, b = made["a"], made["b"]
    assert (a, b) == (source.replace(".mp4", ".aligned-s3-a.mp4"), source.replace(".mp4", ".aligned-s3-b.mp4"))
    assert made["segments"] == [None, None] and made["aligned"]["run"] == str(ws.runs / run)
    picked = labels.pair_dropdown("demo").value
    # The generated clips are not clips to rate: the Rate tab leaves them out, the 8-16 count ignores them,
    # and the Category tab lists them apart.
    entries = {e.name: e for e in tabs.clips.clips("demo")}
    assert entries[a].generated and tabs.clips.clip_caption(entries[a]).endswith(" · made for a DenseDPO pair")
    assert {a, b}.isdisjoint(e.name for e in tabs.clips.clips_to_rate("demo")) and len(tabs.clips.clips_to_rate("demo")) == len(entries) - 2
    assert tabs.clips.clip_summary("demo").startswith(f"**{len(entries) - 2} clips** in `demo` (and 2 made for DenseDPO pairs, below).")
    assert tabs.rate.summary("demo").startswith(rate_summary.split("\n")[0])  # the same clip count as before
    assert "has no label yet" in tabs.rate.summary("demo")  # check's warning about the new pair...
    assert a not in client.predict("demo", 0, api_name="/pairs")["unrated"]
    assert [title for title, _ in labels.pairs("demo")] == [f"1. {a} vs {b} — 0/2 labelled"]

    assert client.predict("demo", a, b, 2, "b", api_name="/label_segment")["segments"] == [None, "b"]
    with pytest.raises(AppError, match="there is no segment 3"):
        client.predict("demo", a, b, 3, "a", api_name="/label_segment")
    assert "2 of 2 segments labelled" in labels.set_label("demo", picked, 0, "a")
    video, timeline, note = labels.view("demo", picked)
    assert Path(video).is_file() and note.startswith(f"**Left: first** `{a}`")
    assert timeline.count('class="huvi-seg"') == 2 and "2 of 2 segments labelled" in timeline
    assert [title for title, _ in labels.pairs("demo")] == [f"1. {a} vs {b} — ✔"]
    assert "has no label yet" not in tabs.rate.summary("demo")  # ...gone once it is labelled (the Rate tab re-reads it when opened)
    pair = json.loads((ws.categories / "demo" / "category.json").read_text())["pairs"][0]
    assert pair["segments"] == ["a", "b"] and pair["aligned"]["source"] == source

    # the Train tab's "segment labels" choice trains with --mode dense
    command = tabs.train.command("demo", "dense-run", "tiny", "both", "dense", *SETTINGS_FOR_3_STEPS, "", "")
    assert "--mode dense" in command
    timeline, version = labels.set_all("demo", picked, "tie", 0)
    assert version == 1 and timeline.count(" · tie<br>") == 2
    assert labels.remove("demo", picked, "") == (gr.skip(), gr.skip())  # confirmation cancelled: kept
    assert Path(video).is_file()
    labels.remove("demo", picked, picked)
    assert not Path(video).exists()  # its preview goes with it
    assert labels.pairs("demo") == [] and (ws.categories / "demo" / "clips" / a).is_file()  # the clips stay


def test_the_runs_tab_lists_compares_and_deletes_runs(served):
    """After the run above: a second run that differs in two settings is compared with it, then deleted."""
    ws, tabs, _ = served
    from huvi.config import load_config
    from huvi.runs import Run

    run = "demo-api"
    assert run in tabs.ctx.trained_runs(), "runs after test_train_in_the_background_then_export_and_generate"
    other = Run(ws.runs / "demo-beta")
    other.root.mkdir()
    other.write_config(load_config("tiny", ["motion.steps=3", "dpo.steps=3", "dpo.beta=2500"]))
    for step in (1, 2, 3):
        other.append_metrics({"stage": "dpo", "step": step, "loss": 0.5, "accuracy": 1.0, "seconds": 2.0})
    with pytest.raises(gr.Error, match="demo-beta is training; stop it before deleting it"):  # fresh metrics: a shell run writing them
        tabs.runs.delete("demo-beta", "demo-beta")
    os.utime(other.metrics_path, (time.time() - 600, time.time() - 600))  # ten minutes ago: it has ended

    table = tabs.runs.runs_table().set_index("run")
    assert table.loc[run, "state"] == "finished" and table.loc[run, "steps"] == "3 motion + 3 dpo"
    assert table.loc["demo-beta", "accuracy"] == "1.000" and table.loc["demo-beta", "time in steps"] == "6 s"
    compared, curves, note = tabs.runs.compare([run, "demo-beta"])
    rows = pd.DataFrame(compared.value["data"], columns=compared.value["headers"]).set_index("")
    assert rows.loc["dpo.beta"].tolist() == ["5000.0", "2500.0"] and rows.loc["end: accuracy", "demo-beta"] == "1.000"
    assert curves.visible and set(curves.value["data"] and [row[-1] for row in curves.value["data"]]) == {run, "demo-beta"}  # a DPO accuracy curve per run
    assert "differ" in note and tabs.runs.compare([run])[2] == "Pick two runs or more to compare them."

    assert tabs.runs.delete("demo-beta", "") == (gr.skip(),) * 3  # the confirmation was cancelled
    assert other.root.is_dir()
    tabs.runs.delete("demo-beta", "demo-beta")
    assert not other.root.exists() and "demo-beta" not in tabs.ctx.runs()
    with pytest.raises(gr.Error, match="There is no run demo-beta"):
        tabs.runs.delete("demo-beta", "demo-beta")

