"""Nothing is lost to a crash, a GPU out of memory or a second app (docs/RELIABILITY.md).

A real `python -m huvi train` is killed with SIGKILL during the motion stage, in the middle of a
checkpoint save and during the DPO stage, and resumed by the CLI and the app's Resume to exactly
the metrics and adapters of an uninterrupted run. A CUDA out-of-memory error (simulated: no GPU
here) stops with a checkpoint and a sentence. Two apps cannot start two GPU jobs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BUSY, metric_rows, tiny_config, truncate, wait_for, without_timing
from safetensors.torch import load_file

import huvi.trainer as trainer_module
from huvi.cli import EXIT_BAD_INPUT, main
from huvi.errors import HuviError
from huvi.io import write_json
from huvi.jobs import Jobs
from huvi.runs import Run
from huvi.train_command import TrainRequest
from huvi.trainer import out_of_memory_advice, train

REPO = Path(__file__).resolve().parent.parent
PRESET = "tiny"


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
