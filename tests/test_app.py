"""The Gradio app through its API (gradio_client), and its handlers' pure parts.

One app is launched in this process on a free local port with a fresh HUVI_HOME; its named
endpoints are driven the way a script would drive them: make a category, upload and rate clips,
train a tiny run in the background and poll it, export and generate with it.
"""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `ui` sits beside `huvi` at the repository root

gr = pytest.importorskip("gradio", reason="the app needs gradio (pip install -r requirements.txt)")
gradio_client = pytest.importorskip("gradio_client", reason="API tests need gradio_client (requirements-dev.txt)")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from huvi.jobs import Jobs
from huvi.pairs import form_pairs
from huvi.synthetic import moving_square
from huvi.video import write_clip
from huvi.workspace import PresetChoice, Workspace
from ui.app import build_app
from ui.handlers import TRAIN_SETTINGS, Handlers, log_tail, metric_frames, newest_preview
from ui.labelling import LabelHandlers

SETTINGS_FOR_3_STEPS = [3, 3, 0, 0, 5000, 1e-3, 1e-3, 0.0, 32, 16]  # steps, seed, previews, beta, lrs, holdout, ranks (tiny)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    ws = Workspace(root / "data", root / "runs")
    ws.prepare()
    handlers = Handlers(ws, Jobs(ws.runs), PresetChoice("tiny", "Tests run on the CPU."))
    demo = build_app(handlers)
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, allowed_paths=[str(ws.categories), str(ws.runs)])
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(root / "downloads"), analytics_enabled=False)
    yield ws, handlers, client
    for proc in handlers.jobs._procs.values():
        if proc.poll() is None:
            proc.kill()
    demo.close()


def uploads(folder: Path, count: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip {i}.mp4"
        write_clip(path, moving_square(1 if i % 2 == 0 else -1, seed=200 + i, frames=32, size=32))
        paths.append(path)
    return paths


def wait_for_state(client: Client, run: str, timeout: float = 240) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.predict(run, api_name="/job_status")
        if status["state"] not in ("starting", "running"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"{run} still {status['state']} after {timeout} s")


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
def test_metric_frames_long_format():
    rows = [{"stage": "motion", "step": s, "loss": 1.0 / s} for s in range(1, 4)]
    rows += [{"stage": "dpo", "step": s, "loss": 0.69, "accuracy": s % 2, "reward_margin": 0.1 * s, "loss_w": 0.2, "loss_l": 0.3, "ref_loss_w": 0.2, "ref_loss_l": 0.25} for s in range(1, 3)]
    rows[-1]["val_accuracy"] = 0.75
    frames = metric_frames(rows, held_out=True)
    assert set(frames) == {"loss", "accuracy", "margin", "health"}
    assert list(dict.fromkeys(frames["loss"]["series"])) == ["motion loss", "motion loss (mean of 20)", "DPO loss", "DPO loss (mean of 20)"]
    assert list(dict.fromkeys(frames["accuracy"]["series"])) == ["training pairs (mean of 20)", "held-out pairs"]
    assert frames["accuracy"].query("series == 'held-out pairs'")["value"].tolist() == [0.75]
    assert set(frames["health"]["series"]) == {"winner", "loser", "winner, reference", "loser, reference"}
    assert all(metric_frames([])[key].empty for key in frames)

    # Before the DPO stage: its series are already named (one empty row each), so the browser's
    # plot gives them colours from the start; the DPO-only plots stay empty (hidden).
    early = metric_frames(rows[:3], held_out=True)
    dpo = early["loss"].query("series == 'DPO loss'")
    assert len(dpo) == 1 and dpo["value"].isna().all() and dpo["step"].tolist() == [1]
    assert early["accuracy"].empty and early["margin"].empty
    assert "DPO loss" not in set(metric_frames(rows[:3], stages=("motion",))["loss"]["series"])
    assert "held-out pairs" not in set(metric_frames(rows)["accuracy"]["series"])


def test_newest_preview_and_log_tail(tmp_path):
    previews = tmp_path / "previews"
    previews.mkdir()
    for name in ("motion-000200.mp4", "dpo-000050.mp4", "dpo-000100.mp4", "notes.mp4"):
        (previews / name).write_bytes(b"")
    assert newest_preview(tmp_path).name == "dpo-000100.mp4"
    assert newest_preview(tmp_path / "none") is None
    (tmp_path / "job.log").write_text("start\nmotion:  10%|#   \rmotion:  50%|#####\rmotion: 100%|##########\nerror: bad\n")
    assert log_tail(tmp_path) == "start\nmotion: 100%|##########\nerror: bad"


def test_the_train_settings_default_to_the_tiny_preset(served):
    _, h, _ = served
    assert len(TRAIN_SETTINGS) == len(SETTINGS_FOR_3_STEPS)
    assert h.preset_values("tiny") == [200, 200, *SETTINGS_FOR_3_STEPS[2:]]  # the tests' settings are tiny's with 3 steps
    assert "CPU preset" in h.preset_info("tiny") and "This machine's default." in h.preset_info("tiny")
    assert h.preset_info("sd15-12gb").startswith("**sd15-12gb** — 12 GB cards")


def test_the_category_tab_advises_8_to_16_clips(served):
    ws, h, _ = served
    root = ws.create_category("counts", "a square")
    assert "No clips yet" in h.clip_summary("counts")
    for count, advice in ((3, "Add 5 more"), (8, "Within the 8–16"), (17, "More than the 8–16")):
        for i in range(len(list((root / "clips").iterdir())), count):
            (root / "clips" / f"c{i:02d}.mp4").write_bytes(b"x")  # only counted here, never decoded
        assert f"**{count} clips**" in h.clip_summary("counts") and advice in h.clip_summary("counts")


def test_only_changed_settings_become_set_overrides(served):
    _, h, _ = served
    values = h.preset_values("tiny")
    command = h.command("demo", "r1", "tiny", "both", "clip", *values, "")
    assert command.startswith("python -m huvi train --category ") and command.endswith(" --preset tiny")  # nothing changed: no --set
    changed = list(values)
    changed[0], changed[4] = 5, 2500.0
    command = h.command("demo", "r1", "tiny", "motion", "clip", *changed, "data.hflip=true\n--set dpo.adapter.rank=8\n# a comment")
    assert command.endswith("--preset tiny --stage motion --set motion.steps=5 --set dpo.beta=2500.0 --set data.hflip=true --set dpo.adapter.rank=8")
    assert h.command("demo", "r1", "tiny", "both", "clip", *values, "dpo.nope=1").startswith("# Unknown setting dpo.nope")
    assert h.command("demo", "bad name", "tiny", "both", "clip", *values, "").startswith("# Run name 'bad name' is not allowed")


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
    ws, _, client = served
    client.predict("squares", "a square sliding", api_name="/create_category")
    assert (ws.categories / "squares" / "category.json").is_file()
    with pytest.raises(AppError, match="already exists"):
        client.predict("squares", "again", api_name="/create_category")
    with pytest.raises(AppError, match="is not allowed"):
        client.predict("../up", "x", api_name="/create_category")

    files = uploads(tmp_path / "up")
    summary, _, report = client.predict("squares", [handle_file(str(p)) for p in files], "tiny", api_name="/add_clips")  # (summary, cleared upload, report)
    assert "**4 clips** in `squares`" in summary and "Add 4 more" in summary
    assert report.startswith("✔ Added 4 clips: `clip_0.mp4`") and "Refused" not in report
    clips = client.predict("squares", api_name="/list_clips")
    assert [c["name"] for c in clips] == [f"clip_{i}.mp4" for i in range(4)]
    assert [(c["score"], c["frames"], c["width"], c["height"]) for c in clips] == [(None, 32, 32, 32)] * 4
    for clip, score in zip(clips, (5, 1, 4, 2)):
        summary = client.predict("squares", clip["name"], score, api_name="/set_score")
    assert "4 rated" in summary and "6 preference pairs" in summary and "Ready to train" in summary
    with pytest.raises(AppError, match="whole number from 1 to 5"):
        client.predict("squares", "clip_0.mp4", 7, api_name="/set_score")
    report = client.predict("squares", "tiny", api_name="/check_category")
    assert report.startswith("✔ Every clip decodes")

    # the pairs in the order a run with that seed trains on them, and the clips left out
    scores = dict(zip([c["name"] for c in clips], (5, 1, 4, 2)))
    pairs = client.predict("squares", 3, api_name="/pairs")
    assert pairs["count"] == 6 and [(p["winner"], p["loser"]) for p in pairs["pairs"]] == [(p.winner, p.loser) for p in form_pairs(scores, 3)]
    assert all(p["winner_score"] > p["loser_score"] for p in pairs["pairs"])
    assert (pairs["unrated"], pairs["ties"], pairs["unpaired"]) == ([], {}, [])
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


def test_train_in_the_background_then_export_and_generate(served):
    ws, h, client = served
    run = "demo-api"
    with pytest.raises(AppError, match="Unknown setting dpo.nope"):
        client.predict("demo", run, "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "dpo.nope=1", api_name="/start_training")
    client.predict("demo", run, "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "", api_name="/start_training")
    started = client.predict(run, api_name="/job_status")
    assert started["state"] in ("starting", "running", "finished") and started["total"] == 6
    assert started["command"].endswith("--preset tiny --set motion.steps=3 --set dpo.steps=3")
    if started["state"] != "finished":  # one GPU job at a time: a second run, or a video, is refused with a sentence
        with pytest.raises(AppError, match=rf"The GPU is busy \(training {run}\); one job runs at a time"):
            client.predict("demo", "demo-second", "tiny", "both", "clip", *SETTINGS_FOR_3_STEPS, "", api_name="/start_training")
        with pytest.raises(AppError, match=rf"The GPU is busy \(training {run}\)"):
            client.predict(run, "a square", None, 0, 2, 0, 1.0, 1.0, False, api_name="/generate")
        assert h.gpu_note().startswith(f"⚠ **The GPU is busy (training {run}).**")
    status = wait_for_state(client, run)
    assert status["state"] == "finished", status["message"] + log_tail(ws.runs / run)
    assert (status["done"], status["total"]) == (6, 6)
    assert h.trained_runs() == [run] and h.gpu_note() == ""
    assert h.run_prompt(run) == "a square sliding across the frame"

    files, card, metadata = client.predict(run, "diffusers", False, api_name="/export")
    names = sorted(Path(f["value"] if isinstance(f, dict) else f).name for f in files)
    assert any(name.endswith(".safetensors") for name in names), names
    assert card.strip() and metadata

    video, compare, frame, note = client.predict(run, "a square sliding", None, 0, 2, 0, 1.0, 1.0, True, api_name="/generate")
    assert Path(video["video"] if isinstance(video, dict) else video).is_file()
    assert compare and Path(frame).is_file() and note.startswith("Saved to")


def test_the_dense_tab_makes_labels_and_shows_aligned_pairs(served):
    """After the run above: aligned pairs made with it, labelled through the API and the tab's
    handlers, shown side by side over the segment timeline, then trained on with --mode dense."""
    ws, h, client = served
    run = "demo-api"
    assert run in h.trained_runs(), "runs after test_train_in_the_background_then_export_and_generate"
    labels = LabelHandlers(ws, h.jobs, h.preset)
    assert labels.runs() == [run]
    source = min(json.loads((ws.categories / "demo" / "category.json").read_text())["scores"])
    [made] = client.predict("demo", run, [source], 0.75, 3, 0, api_name="/make_aligned_pairs")
    a, b = made["a"], made["b"]
    assert (a, b) == (source.replace(".mp4", ".aligned-s3-a.mp4"), source.replace(".mp4", ".aligned-s3-b.mp4"))
    assert made["segments"] == [None, None] and made["aligned"]["run"] == str(ws.runs / run)
    picked = labels.pair_dropdown("demo").value
    entries = {e.name: e for e in h.clips("demo")}  # the Category and Rate tabs say the new clips need no rating
    assert entries[a].paired and h.clip_caption(entries[a]).endswith(" · in a pair (DenseDPO tab)")
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
    pair = json.loads((ws.categories / "demo" / "category.json").read_text())["pairs"][0]
    assert pair["segments"] == ["a", "b"] and pair["aligned"]["source"] == source

    # the Train tab's "segment labels" choice trains with --mode dense
    command = h.command("demo", "dense-run", "tiny", "both", "dense", *SETTINGS_FOR_3_STEPS, "")
    assert "--mode dense" in command
    timeline, version = labels.set_all("demo", picked, "tie", 0)
    assert version == 1 and timeline.count(" · tie<br>") == 2
    assert labels.remove("demo", picked, "") == (gr.skip(), gr.skip())  # confirmation cancelled: kept
    assert Path(video).is_file()
    labels.remove("demo", picked, picked)
    assert not Path(video).exists()  # its preview goes with it
    assert labels.pairs("demo") == [] and (ws.categories / "demo" / "clips" / a).is_file()  # the clips stay
