"""Nothing is lost to a bad file, a crash, a reload or a second user (docs/RELIABILITY.md).

A bad-input corpus, built here from small files, goes through the library (`add_clip`,
`check_category`, `set_score`, `Workspace.create_category`), the CLI (`check --clips`, `check
--category`) and the app's upload handler; each file gets one sentence and nothing saved changes.
A real `python -m huvi train` is killed with SIGKILL during the motion stage, in the middle of a
checkpoint save and during the DPO stage, and resumed by the CLI and the app's Resume to exactly
the metrics and adapters of an uninterrupted run. A CUDA out-of-memory error (simulated: no GPU
here) stops with a checkpoint and a sentence. Two apps cannot start two GPU jobs; the app serves
files from its data and run folders only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from helpers import BAD_CASES, BUSY, folder_snapshot, metric_rows, tiny_config, truncate, wait_for, without_timing
from PIL import Image
from safetensors.torch import load_file

import huvi.trainer as trainer_module
import huvi.workspace as workspace_module
from huvi.catalogue import PresetChoice
from huvi.category import clip_frames
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.errors import HuviError
from huvi.io import write_json
from huvi.jobs import Jobs
from huvi.runs import Run
from huvi.synthetic import moving_square
from huvi.train_command import TrainRequest
from huvi.trainer import out_of_memory_advice, train
from huvi.video import write_clip
from huvi.workspace import Workspace, add_clip, set_score

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `ui` sits beside `huvi` at the repository root

gr = pytest.importorskip("gradio", reason="the app's handlers need gradio (pip install -r requirements.txt)")
from ui.category import CategoryHandlers
from ui.common import Context
from ui.rating import RateHandlers

PRESET = "tiny"  # 8 frames at stride 3 of 32x32: a clip needs 24 frames
LIMIT = 2**20  # the upload size limit while these tests run (the real one is 500 MB)


# the corpus ----------------------------------------------------------------------------------------
def _clip(frames: int, seed: int) -> Callable[[Path], None]:
    return lambda path: write_clip(path, moving_square(1, seed=seed, frames=frames, size=32))


def _text(path: Path) -> None:
    path.write_text("this is a text file, not a video\n" * 20)


def _truncated(path: Path) -> None:
    _clip(32, seed=301)(path)
    truncate(path)  # the index (moov) of an MP4 comes last: half a file has none


def _eight_k(path: Path) -> None:
    """24 frames of 7680x4320 (8K): ffmpeg makes them, so they never pass through this process."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    source = "color=c=0x336699:size=7680x4320:rate=8:duration=3"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)


def _portrait(path: Path) -> None:
    write_clip(path, moving_square(1, seed=302, frames=32, size=40)[:, :, 8:32])  # (32, 40, 24, 3): 24 wide, 40 high


def _image(path: Path) -> None:
    Image.fromarray(moving_square(1, seed=303, frames=1, size=32)[0]).save(path, format="PNG")


def _image_named_mp4(path: Path) -> None:
    _image(path.with_suffix(".png"))
    path.with_suffix(".png").rename(path)


def _oversized(path: Path) -> None:
    path.write_bytes(b"\0" * (LIMIT + 1))


@dataclass(frozen=True)
class Upload:
    make: Callable[[Path], None]
    says: str  # a fragment of the sentence it gets; "" when the file is accepted
    kept: int = 0  # frames the tiny preset keeps of an accepted file (10 at most)


# One file per case; the names are what the sentences name. good_again.mp4 has good.mp4's bytes.
CORPUS: dict[str, Upload] = {
    "notes.mp4": Upload(_text, "notes.mp4: could not be decoded as a video (OSError); re-encode it as an H.264 MP4."),
    "truncated.mp4": Upload(_truncated, "truncated.mp4: could not be decoded as a video"),
    "empty.mp4": Upload(lambda path: path.write_bytes(b""), "empty.mp4: the file is empty; upload the clip again."),
    "one_frame.mp4": Upload(_clip(1, seed=304), "one_frame.mp4: only 1 frame at stride 3, but 8 are needed; use a clip of at least 24 frames"),
    "short.mp4": Upload(_clip(10, seed=305), "short.mp4: only 4 frames at stride 3, but 8 are needed"),
    "photo.png": Upload(_image, "photo.png: not a supported clip type; use .mp4, .webm, .mov, .gif."),
    "photo_named.mp4": Upload(_image_named_mp4, "photo_named.mp4: only 1 frame at stride 3"),
    "huge.mp4": Upload(_oversized, "huge.mp4: 1.0 MB is over the 1 MB limit per clip; trim it or re-encode it smaller"),
    "eight_k.mp4": Upload(_eight_k, "", kept=8),  # 24 frames at stride 3
    "portrait.mp4": Upload(_portrait, "", kept=10),
    "good.mp4": Upload(_clip(32, seed=306), "", kept=10),
}
DUPLICATE = "good_again.mp4"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, case in CORPUS.items():
        case.make(folder / name)
    shutil.copyfile(folder / "good.mp4", folder / DUPLICATE)
    return folder


@pytest.fixture(autouse=True)
def small_limit(monkeypatch):
    monkeypatch.setattr(workspace_module, "MAX_CLIP_BYTES", LIMIT)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "data", tmp_path / "runs")
    ws.categories.mkdir(parents=True)
    ws.runs.mkdir()
    return ws


@pytest.fixture
def context(ws) -> Context:
    return Context(ws, Jobs(ws.runs), PresetChoice(PRESET, "Tests run on the CPU."))


@pytest.fixture
def handlers(context) -> CategoryHandlers:
    """The Category tab's handlers."""
    return CategoryHandlers(context.ws, context.jobs, context.preset)


@pytest.fixture
def rating(context) -> RateHandlers:
    """The Rate tab's handlers."""
    return RateHandlers(context.ws, context.jobs, context.preset)


def one_sentence(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and message.endswith(".")


def uploads(corpus: Path) -> list[Path]:
    return [corpus / name for name in [*CORPUS, DUPLICATE]]


def expected(name: str) -> str:
    """The start of the sentence the library and the app give `name` ("" when it is accepted)."""
    return f"{DUPLICATE} is already in" if name == DUPLICATE else CORPUS[name].says


# the corpus through the library, the CLI and the app ---------------------------------------------
def test_each_upload_gets_its_sentence_from_the_library_and_nothing_saved_changes(ws, corpus):
    root = ws.create_category("corpus", "a square sliding")
    data = tiny_config().data
    for path in uploads(corpus):
        before = folder_snapshot(root)
        try:
            name = add_clip(root, path, None, data)
        except HuviError as err:
            assert expected(path.name) and expected(path.name) in str(err) and one_sentence(str(err)), str(err)
            assert folder_snapshot(root) == before, f"{path.name} changed the category although it was refused"
            continue
        assert not expected(path.name), f"{path.name} was accepted: {name}"
        after = folder_snapshot(root)
        assert set(after) - set(before) == {f"clips/{name}"} and all(after[k] == v for k, v in before.items())
    assert sorted(p.name for p in (root / "clips").iterdir()) == ["eight_k.mp4", "good.mp4", "portrait.mp4"]


def test_check_clips_gives_every_file_one_line_and_no_traceback(corpus, capsys):
    assert main(["check", "--clips", str(corpus), "--preset", PRESET]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    lines = out.splitlines()
    files = sorted(p.name for p in corpus.iterdir())
    assert len(lines) == len(files)
    for line, name in zip(lines, files):
        case = CORPUS["good.mp4" if name == DUPLICATE else name]  # each file alone: a copy is a good clip
        if case.says:
            assert line.startswith(f"error: {case.says}") and one_sentence(line), line
        else:
            assert line == f"ok: {name}: {case.kept} frames at stride 3 fit preset {PRESET}.", line
    assert err.splitlines() == [f"8 of {len(files)} files cannot be added as clips."]
    assert "Traceback" not in out + err


def test_a_folder_or_a_broken_link_given_as_a_clip_gets_a_sentence(tmp_path, capsys):
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(HuviError, match=r"^dir.mp4: is a folder, not a clip; give the video files in it\.$"):
        workspace_module.check_clip(tmp_path / "dir.mp4", tiny_config().data)
    assert main(["check", "--clips", str(tmp_path), "--preset", "tiny"]) == EXIT_BAD_INPUT  # a folder: its files
    assert capsys.readouterr().out.splitlines() == ["error: link.mp4: file not found."]


def test_check_of_a_folder_without_category_json_reports_every_file(corpus, tmp_path, capsys):
    folder = tmp_path / "Gitarre-ü"  # not a category: a plain folder, with a non-ASCII name
    shutil.copytree(corpus, folder)
    assert main(["check", "--category", str(folder), "--preset", PRESET]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "error: Gitarre-ü has no category.json; create one with a prompt and a score per clip."
    assert len(lines) == 1 + len(list(corpus.iterdir()))
    assert sum(line.startswith("ok: ") for line in lines) == 4 and "Traceback" not in out + err
    assert err.splitlines() == [f"{folder}: 9 problem(s) to fix before training."]


def test_check_names_a_clip_that_is_in_a_category_twice(category_copy, capsys):
    name = min(json.loads((category_copy / "category.json").read_text())["scores"])
    shutil.copyfile(category_copy / "clips" / name, category_copy / "clips" / "copy.mp4")
    meta = json.loads((category_copy / "category.json").read_text())
    meta["scores"]["copy.mp4"] = 3
    (category_copy / "category.json").write_text(json.dumps(meta))
    assert main(["check", "--category", str(category_copy), "--preset", PRESET]) == 0
    out, _ = capsys.readouterr()
    assert f"warning: {name} is the same file as copy.mp4; remove one of them (a clip compared with itself teaches nothing)." in out.splitlines()


@pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")  # gr.Warning outside a browser session
def test_the_upload_handler_names_each_refused_file_and_keeps_the_rest(handlers, ws, corpus):
    root = ws.create_category("corpus", "a square sliding")
    before = folder_snapshot(root)
    summary, cleared, report = handlers.add_clips("corpus", [str(p) for p in uploads(corpus)], PRESET)
    assert cleared is None and "**3 clips** in `corpus`" in summary
    added, refused = report.split("\n\n")
    assert added.startswith("✔ Added 3 clips: `eight_k.mp4`, `portrait.mp4`, `good.mp4`.")
    lines = refused.splitlines()
    assert lines[0] == "✖ Refused 9 files (the others were kept):"
    refusals = [p.name for p in uploads(corpus) if expected(p.name)]
    assert len(lines[1:]) == len(refusals)
    for line, name in zip(lines[1:], refusals):
        assert line.startswith("- ") and expected(name) in line and one_sentence(line[2:]), line
    after = folder_snapshot(root)
    assert all(after[k] == v for k, v in before.items())  # category.json untouched: no ratings yet
    assert set(after) - set(before) == {"clips/eight_k.mp4", "clips/portrait.mp4", "clips/good.mp4"}

    _, _, report = handlers.add_clips("corpus", [str(corpus / "good.mp4")], PRESET)  # later, once more
    assert report == "✖ Refused 1 file:\n- good.mp4 is already in corpus as good.mp4; it was not added again."
    assert folder_snapshot(root) == after


def test_an_8k_clip_is_shrunk_by_ffmpeg_while_it_is_decoded(corpus):
    tracemalloc.start()
    try:
        frames = clip_frames(corpus / "eight_k.mp4", tiny_config().data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames.shape == (8, 32, 32, 3)  # (f, h, w, 3): 24 frames at stride 3, at the preset's size
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB in Python while decoding: full 8K frames (100 MB each) came through"


def test_a_portrait_clip_is_centre_cropped_to_the_presets_size(corpus):
    frames = clip_frames(corpus / "portrait.mp4", tiny_config().data)
    assert frames.shape == (10, 32, 32, 3)  # (f, h, w, 3): 24x40 covered to 32x53, then cropped


# category-level cases through the app (the library and the CLI: tests/helpers.py BAD_CASES) --------
def rated_category(ws: Workspace, name: str, count: int) -> Path:
    """`count` different clips rated 5 and 1 by turns. One clip is encoded; each copy ends in its own
    MP4 "free" box (ignored by decoders), so the files differ as different uploads do."""
    root = ws.create_category(name, "a square sliding")
    clip = root / "clips" / "c00.mp4"
    write_clip(clip, moving_square(1, seed=400, frames=24, size=16))
    data = clip.read_bytes()
    for i in range(1, count):
        (root / "clips" / f"c{i:02d}.mp4").write_bytes(data + struct.pack(">I4sI", 12, b"free", i))  # (size, type, payload)
    write_json(root / "category.json", {"prompt": "a square sliding", "scores": {f"c{i:02d}.mp4": 5 if i % 2 == 0 else 1 for i in range(count)}})
    return root


@pytest.mark.parametrize("count, advice, problem", [(3, "⚠ Add 5 more", "has 3 usable rated clips; add clips and rate them until at least 4 are rated"), (40, "⚠ More than the 8–16 clips", "has 40 rated clips; the method is tuned for 8-16")])
def test_too_few_and_many_clips_get_advice_in_the_app(ws, handlers, rating, count, advice, problem, capsys):
    root = rated_category(ws, f"n{count}", count)
    assert advice in handlers.clip_summary(root.name)
    assert problem in rating.summary(root.name)
    assert main(["check", "--category", str(root), "--preset", PRESET]) == (EXIT_BAD_INPUT if count < 4 else 0)
    assert problem in capsys.readouterr().out


def test_unrated_clips_are_asked_to_be_rated_not_added(ws, rating):
    """Eight clips there but none rated: the advice is to rate them, not to add clips."""
    root = rated_category(ws, "unrated", 8)
    write_json(root / "category.json", {"prompt": "a square sliding", "scores": {"c00.mp4": 5}})
    assert "has 1 usable rated clips; rate at least 3 more of its 7 unrated clips 1-5 (the app's Rate tab" in rating.summary("unrated")
    assert "add clips" not in rating.summary("unrated")


def test_bad_ratings_and_all_equal_ratings_in_the_app(ws, handlers, rating):
    root = rated_category(ws, "ratings", 4)
    name = min(p.name for p in (root / "clips").iterdir())
    before = folder_snapshot(root)
    for bad in (0, 6, "five", 4.5, True):
        with pytest.raises(gr.Error, match=rf"A rating must be a whole number from 1 to 5, not {bad!r}\."):
            rating.set_score("ratings", name, bad)
        with pytest.raises(HuviError, match="A rating must be a whole number from 1 to 5"):
            set_score(root, name, bad)
    assert folder_snapshot(root) == before
    for clip in sorted(p.name for p in (root / "clips").iterdir()):
        rating.set_score("ratings", clip, 3)
    assert "All clips of ratings have the same score, so no preference pair can be formed; give at least two clips different ratings." in rating.summary("ratings")


@pytest.mark.parametrize("case", ["missing_category_json", "malformed_json"])
def test_a_broken_category_json_is_one_sentence_in_the_app_and_left_as_it_is(ws, handlers, rating, category, corpus, case):
    root = ws.categories / "broken"
    shutil.copytree(category, root)
    BAD_CASES[case].mutate(root)
    before = folder_snapshot(root)
    message = "There is no category 'broken'" if case == "missing_category_json" else "is not valid JSON"
    with pytest.raises(gr.Error, match=message) as info:
        handlers.add_clips("broken", [str(corpus / "good.mp4")], PRESET)
    assert one_sentence(info.value.message)
    assert message in rating.summary("broken")
    assert folder_snapshot(root) == before


@pytest.mark.parametrize("name", ["../up", "a/b", "..", "", "!!!"])
def test_unsafe_category_names_are_refused_and_nothing_is_written(ws, handlers, name):
    outside = folder_snapshot(ws.categories.parent)
    with pytest.raises(HuviError, match=r"is not allowed: use letters, digits, '-' and '_'|has no letter or digit"):
        ws.create_category(name, "a prompt")
    with pytest.raises(gr.Error) as info:
        handlers.create_category(name, "a prompt")
    assert one_sentence(info.value.message)
    assert folder_snapshot(ws.categories.parent) == outside


# crash safety --------------------------------------------------------------------------------------
# `python -c KILL_WHILE_WRITING FRAGMENT train ...`: the CLI, except that the process SIGKILLs itself
# in the middle of writing the safetensors file whose temporary path contains FRAGMENT (half of it
# on disk): the moment a power cut or the OOM killer could pick, made exact.
KILL_WHILE_WRITING = """
import os, signal, sys
import huvi.io
from huvi.cli import main

fragment, real = sys.argv[1], huvi.io.save_file

def save_then_die(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    if fragment in filename:
        os.truncate(filename, os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

huvi.io.save_file = save_then_die
sys.exit(main(sys.argv[2:]))
"""
SHORT_RUN = ("motion.steps=3", "dpo.steps=3", "motion.checkpoint_every=1", "dpo.checkpoint_every=1")  # trained_run's steps


def cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def logged(run: Path, stage: str, step: int) -> bool:
    return any((r["stage"], r["step"]) == (stage, step) for r in Run(run).read_metrics())


def kill_job(jobs: Jobs, run: Path) -> None:
    pid = json.loads((run / "job.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    jobs._procs.pop(pid).wait()


def test_sigkill_during_motion_a_checkpoint_save_and_dpo_resumes_to_the_same_result(trained_run, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "killed"
    resume = ["-m", "huvi", "train", "--category", str(trained_run.category), "--out", str(run), "--resume"]

    # 1. The app starts the run; SIGKILL to its process group once the motion stage has logged a step.
    jobs = Jobs(runs)
    jobs.start(TrainRequest(trained_run.category, run, PRESET, SHORT_RUN))
    wait_for(lambda: logged(run, "motion", 1), what="motion step 1")
    kill_job(jobs, run)
    restarted = Jobs(runs)  # a restarted app finds it interrupted and resumable
    status = restarted.status(run)  # "stopped" when the kill fell just after a checkpoint
    assert status.state in ("interrupted", "stopped") and status.can_resume, status.message

    # 2. The CLI resumes; the process dies half-way through writing checkpoint dpo-000001.
    torn = run / "checkpoints" / ".dpo-000001.tmp"
    proc = cli("-c", KILL_WHILE_WRITING, f"{torn.name}/.optimizer.", *resume[2:])
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (torn / "adapter.safetensors").is_file() and len(list(torn.glob(".optimizer.*.tmp.safetensors"))) == 1
    assert not (torn / "optimizer.safetensors").exists() and not (run / "checkpoints" / "dpo-000001").exists()
    assert Run(run).latest_checkpoint().path.name == "motion-000003" and Run(run).adapter_path("motion").is_file()

    # 3. The app's Resume; SIGKILL once the DPO stage has logged step 2.
    restarted.resume(run)
    wait_for(lambda: logged(run, "dpo", 2), what="dpo step 2")
    kill_job(restarted, run)
    assert not torn.exists()

    # 4. The CLI resumes to the end: the metrics, the printed last rows and the adapters are the
    # uninterrupted run's.
    proc = cli(*resume)
    assert proc.returncode == 0, proc.stderr
    reference = without_timing(metric_rows(trained_run.root))
    assert without_timing(metric_rows(run)) == reference
    printed = without_timing([json.loads(line) for line in proc.stdout.splitlines()])
    assert printed == [[r for r in reference if r["stage"] == s][-1] for s in ("motion", "dpo")]
    for stage in ("motion", "dpo"):
        got, want = load_file(str(Run(run).adapter_path(stage))), load_file(str(Run(trained_run.root).adapter_path(stage)))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), stage
    assert restarted.status(run).state == "finished"


def test_a_crash_while_the_last_adapter_is_written_resumes_to_the_same_result(trained_run, tmp_path):
    """The torn state a kill between the final checkpoint and the adapter file leaves: no dpo
    adapter, half of its temporary file beside the motion one."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.root, run)
    Run(run).adapter_path("dpo").unlink()
    half = run / "adapters" / ".dpo.x1y2z3.tmp.safetensors"
    shutil.copyfile(Run(trained_run.root).adapter_path("dpo"), half)
    truncate(half)
    result = train(trained_run.cfg, trained_run.category, run, resume=True, show_progress=False)
    assert not half.exists()
    assert without_timing(metric_rows(run)) == without_timing(metric_rows(trained_run.root))
    assert without_timing(list(result.last.values())) == without_timing([trained_run.result.last[s] for s in ("motion", "dpo")])
    got, want = load_file(str(Run(run).adapter_path("dpo"))), load_file(str(Run(trained_run.root).adapter_path("dpo")))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_written_atomically_get_the_mode_a_plain_write_gives(tmp_path, umask):
    """mkstemp makes its files private (0600) and safetensors' save_file writes a private file of its
    own; a category.json, an adapter, an export or a clip must get the mode the umask gives."""
    from huvi.io import write_safetensors
    from huvi.video import write_clip

    before = os.umask(umask)
    try:
        write_json(tmp_path / "category.json", {})
        write_safetensors(tmp_path / "adapter.safetensors", {"w": torch.zeros(2)})
        write_clip(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8), 8)
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(before)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("category.json", "adapter.safetensors", "clip.mp4", "plain.json")}
    assert set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}


def test_renames_are_followed_by_an_fsync_of_the_folder(tmp_path, monkeypatch):
    """A power cut after a rename must not lose it: the folder holding the new name is fsynced."""
    from huvi.runs import Run

    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(info.st_mode)))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json(tmp_path / "a" / "state.json", {})
    assert (str(tmp_path / "a"), True) in synced
    synced.clear()
    Run(tmp_path / "run").save_checkpoint("motion", 1, {"adapter": {"w": torch.zeros(1)}}, {"step": 1}, keep=2)
    folders = [path for path, is_dir in synced if is_dir]
    assert str(tmp_path / "run" / "checkpoints") in folders  # the checkpoint folder's rename into place


def test_a_partial_latent_cache_entry_is_rebuilt(category, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from huvi.cache import cache_category
    from huvi.category import load_category
    from huvi.families.sd15.models import load_encoders

    monkeypatch.setenv("HUVI_CACHE", str(tmp_path / "cache"))
    cfg, cat, cpu = tiny_config(), load_category(category), torch.device("cpu")
    whole = cache_category(cat, cfg, lambda: load_encoders(cfg.model), cpu, show_progress=False)
    entries = sorted((tmp_path / "cache" / "latents").glob("*.safetensors"))
    save_file({"latents": torch.zeros(4, 10, 16, 16)}, str(entries[0]))  # no "flipped": written by something else
    truncate(entries[1])
    loads = []
    again = cache_category(cat, cfg, lambda: loads.append(1) or load_encoders(cfg.model), cpu, show_progress=False)
    assert loads == [1]
    for name, clip in whole.clips.items():
        torch.testing.assert_close(again.clips[name].latents, clip.latents, rtol=0, atol=1e-6)


# a GPU out of memory (simulated on the CPU) ------------------------------------------------------
def test_out_of_memory_stops_with_a_checkpoint_and_a_sentence_then_resumes(category, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_step = trainer_module._Trainer._step

    def step(self, stage, model, optimizer, schedule, params, index):
        if stage == "motion" and index == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, stage, model, optimizer, schedule, params, index)

    monkeypatch.setattr(trainer_module._Trainer, "_step", step)
    args = ["train", "--category", str(category), "--out", str(run), "--stage", "motion"]
    assert main([*args, "--preset", PRESET, "--set", "motion.steps=2"]) == EXIT_BAD_INPUT
    _, err = capsys.readouterr()
    assert err.splitlines()[-1] == (
        "error: The GPU ran out of memory in the motion stage at step 2; start a new run with fewer data.frames or a "
        "smaller data.width and data.height, or resume this run on a card with more free memory (Resume or --resume "
        "continues from step 1)."
    )
    assert Run(run).latest_checkpoint().path.name == "motion-000001"

    monkeypatch.setattr(trainer_module._Trainer, "_step", real_step)
    assert main([*args, "--resume"]) == 0
    assert [(r["stage"], r["step"]) for r in metric_rows(run)] == [("motion", 1), ("motion", 2)]


def test_out_of_memory_in_a_preview_or_held_out_scoring_skips_it_and_training_goes_on(category, tmp_path, monkeypatch, caplog):
    """The extras of a step are optional: the first preview and the first held-out scoring run out
    of memory, are skipped with a warning, and the run ends as usual with the model in train mode."""
    from huvi.previews import Previewer

    failing = {"preview": 1, "validate": 1}
    real_write, real_validate = Previewer.write, trainer_module._Trainer._validate

    def out_of_memory_once(what: str, real):
        def call(self, *args):
            if failing[what]:
                failing[what] -= 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return real(self, *args)

        return call

    monkeypatch.setattr(Previewer, "write", out_of_memory_once("preview", real_write))
    monkeypatch.setattr(trainer_module._Trainer, "_validate", out_of_memory_once("validate", real_validate))
    run = tmp_path / "run"
    settings = ["motion.steps=1", "dpo.steps=2", "dpo.eval_every=1", "dpo.eval_samples=1", "data.holdout=0.2", "generate.preview_every=1", "generate.steps=2"]
    with caplog.at_level(logging.WARNING, logger="huvi.trainer"):
        assert main(["train", "--category", str(category), "--out", str(run), "--preset", PRESET, *[a for s in settings for a in ("--set", s)]]) == 0
    assert failing == {"preview": 0, "validate": 0}
    warnings = [r.getMessage() for r in caplog.records if "ran out of memory" in r.getMessage()]
    assert [w.split(";")[0] for w in warnings] == ["The GPU ran out of memory while writing a preview clip", "The GPU ran out of memory while scoring the held-out pairs"]
    rows = metric_rows(run)
    assert [(r["stage"], r["step"], "val_accuracy" in r) for r in rows] == [("motion", 1, False), ("dpo", 1, False), ("dpo", 2, True)]
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["dpo-000001.mp4", "dpo-000002.mp4"]  # motion's was skipped
    assert Run(run).adapter_path("dpo").is_file()


@pytest.mark.parametrize("preset, advice", [("sd15-24gb", "--preset sd15-16gb"), ("sd15-16gb", "--preset sd15-12gb"), ("sd15-12gb", "fewer data.frames")])
def test_out_of_memory_names_the_next_smaller_preset(preset, advice):
    assert advice in out_of_memory_advice(preset)


# the app: two sessions or two apps, and what it serves ------------------------------------------------
def test_two_apps_starting_at_once_start_one_job(category, tmp_path):
    """Two Jobs on one runs folder, as two app processes have; the job is a stand-in that sleeps."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nsleep 60\n")  # `sh fake -m huvi train ... --out RUN`: the job's command line as the app checks it
    fake.chmod(0o755)
    apps = [Jobs(tmp_path / "runs", python=str(fake)) for _ in range(2)]
    barrier, outcomes = threading.Barrier(2), {}

    def start(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = apps[i].start(TrainRequest(category, tmp_path / "runs" / f"run{i}", PRESET)).state
        except HuviError as err:
            outcomes[i] = str(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        started = [i for i, o in outcomes.items() if o == "starting"]
        assert len(started) == 1, outcomes
        assert outcomes[1 - started[0]].startswith(f"{BUSY} is busy (training run{started[0]}); one job runs at a time")
        assert apps[0].holder() == apps[1].holder() == f"training run{started[0]}"
    finally:
        for app in apps:
            for pid, proc in app._procs.items():
                os.killpg(pid, signal.SIGKILL)
                proc.wait()


def test_the_app_serves_files_from_its_data_and_run_folders_only(ws, context, tmp_path):
    from ui.app import build_app

    root = ws.create_category("served", "a square")
    demo = build_app(context)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, allowed_paths=[str(ws.categories), str(ws.runs)])
    try:
        def status(path: Path) -> int:
            try:
                with urllib.request.urlopen(f"{demo.local_url}gradio_api/file={path}") as response:
                    return response.status
            except urllib.error.HTTPError as err:
                return err.code

        (tmp_path / "secret.txt").write_text("not for the browser")
        assert status(root / "category.json") == 200
        assert status(tmp_path / "secret.txt") == 403
        assert status(REPO / "app.py") == 403
        assert status(Path("/etc/passwd")) == 403
        assert status(ws.categories / ".." / "secret.txt") == 403
    finally:
        demo.close()

