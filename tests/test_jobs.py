"""huvi.jobs: training in a background process, its status read back from the run folder.

Status inference is checked on hand-made run folders; one real tiny job is started, refused a
twin, stopped (checkpoint, exit 130), resumed and finished; another fails on a bad clip and its
sentence reaches the status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import BAD_CASES, BUSY, metric_rows, wait_for

from huvi.errors import HuviError
from huvi.gpu_lock import LOCK_FILE
from huvi.job_log import start_phase
from huvi.jobs import JOB_FILE, JOB_LOG, Jobs, progress, read_job
from huvi.precision import free_cores
from huvi.runs import Run
from huvi.train_command import TrainRequest, display_command, train_argv


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def jobs(tmp_path):
    manager = Jobs(tmp_path / "runs")
    yield manager
    for pid, proc in list(manager._procs.items()):  # never leave a training process behind
        if proc.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            proc.wait()


def fake_run(root: Path, rows: list[dict], job: dict | None, checkpoints=(), adapters=(), log: str = "", config: bool = True) -> Path:
    """A run folder as a job leaves it: metrics rows, checkpoint folders, adapters, job.json/log."""
    root.mkdir(parents=True)
    if config:
        (root / "config.yaml").write_text("preset: tiny\nmotion:\n  steps: 4\ndpo:\n  steps: 2\n")
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for stage, step in checkpoints:
        (root / "checkpoints" / f"{stage}-{step:06d}").mkdir(parents=True)
        (root / "checkpoints" / f"{stage}-{step:06d}" / "state.json").write_text("{}")
    for stage in adapters:
        (root / "adapters").mkdir(exist_ok=True)
        (root / "adapters" / f"{stage}.safetensors").write_bytes(b"x")
    if job is not None:
        (root / JOB_FILE).write_text(json.dumps(job))
        (root / JOB_LOG).write_text(log)
    return root


def rows(stage: str, steps: int, seconds: float = 0.5) -> list[dict]:
    return [{"stage": stage, "step": s, "loss": 0.5, "seconds": seconds} for s in range(1, steps + 1)]


# progress ----------------------------------------------------------------------------------------
def test_progress_counts_steps_over_stages_and_estimates_the_rest():
    p = progress(rows("motion", 4, 1.0) + rows("dpo", 1, 2.0), {"motion": 4, "dpo": 6})
    assert (p.stage, p.step, p.done, p.total) == ("dpo", 1, 5, 10)
    assert p.seconds_per_step == 2.0 and p.eta_seconds == 10.0  # 5 steps left at the current stage's rate
    assert p.fraction == 0.5
    empty = progress([], {"motion": 4})
    assert (empty.done, empty.total, empty.eta_seconds) == (0, 4, None)


def test_progress_after_a_resume_counts_each_step_once():
    p = progress(rows("motion", 3) + rows("motion", 4)[2:], {"motion": 4})
    assert (p.done, p.step) == (4, 4)


# status from the run folder ----------------------------------------------------------------------
JOB = {"command": "python -m huvi train ...", "category": "/nowhere", "stages": ["motion", "dpo"], "totals": {"motion": 4, "dpo": 2}}


@pytest.mark.parametrize(
    "case, expected, can_resume",
    [
        ({"rows": rows("motion", 4) + rows("dpo", 2), "checkpoints": [("dpo", 2)], "adapters": ["motion", "dpo"]}, "finished", False),
        ({"rows": rows("motion", 2), "checkpoints": [("motion", 2)]}, "stopped", True),
        ({"rows": rows("motion", 3), "checkpoints": [("motion", 2)]}, "interrupted", True),
        ({"rows": [], "checkpoints": []}, "interrupted", True),
        ({"rows": rows("motion", 3), "checkpoints": [("motion", 2)], "log": "error: The GPU ran out of memory; use --preset sd15-16gb.\n"}, "failed", True),
        ({"rows": [], "config": False, "log": "error: squares: clip.mp4: the file is empty; upload the clip again.\n"}, "failed", False),
        ({"rows": rows("motion", 1), "log": "Traceback (most recent call last):\n  File ...\nZeroDivisionError: division by zero\n"}, "failed", False),
    ],
    ids=["finished", "stopped", "interrupted", "interrupted_before_any_step", "failed_after_checkpoint", "failed_at_start", "crashed"],
)
def test_status_of_an_ended_job(jobs, tmp_path, case, expected, can_resume):
    case = dict(case)
    root = fake_run(tmp_path / "runs" / "r", case.pop("rows"), JOB | {"pid": dead_pid()}, **case)
    status = jobs.status(root)
    assert status.state == expected, status.message
    assert status.can_resume is can_resume
    assert not status.active and not status.can_stop
    assert status.command == JOB["command"]


def test_status_messages_are_one_sentence_from_the_log(jobs, tmp_path):
    log = "12:00 INFO huvi: preset tiny\r\nsome bar\rerror: squares: clip.mp4: the file is empty; upload the clip again.\n"
    root = fake_run(tmp_path / "runs" / "r", [], JOB | {"pid": dead_pid()}, config=False, log=log)
    assert jobs.status(root).message == "squares: clip.mp4: the file is empty; upload the clip again."
    crashed = fake_run(tmp_path / "runs" / "c", [], JOB | {"pid": dead_pid()}, log="Traceback (most recent call last):\nKeyError: 'x'\n")
    assert jobs.status(crashed).message == "The training process crashed with \"KeyError: 'x'\" (a bug; the traceback is in c/job.log)."


def test_a_run_without_job_json_is_read_from_its_files(jobs, tmp_path):
    root = fake_run(tmp_path / "runs" / "cli", rows("motion", 2), None)
    assert jobs.status(root).state == "running"  # metrics written moments ago: a CLI run in progress
    old = time.time() - 3600
    os.utime(root / "metrics.jsonl", (old, old))
    assert jobs.status(root).state == "interrupted"
    assert jobs.status(tmp_path / "runs" / "never").state == "none"


def test_a_reused_pid_is_not_taken_for_the_job(jobs, tmp_path):
    root = fake_run(tmp_path / "runs" / "r", rows("motion", 2), JOB | {"pid": os.getpid()}, checkpoints=[("motion", 2)])
    assert jobs.status(root).state == "stopped"  # this test process does not train r


# starting ----------------------------------------------------------------------------------------
def request(category: Path, run: Path, *overrides: str, preset: str = "tiny") -> TrainRequest:
    return TrainRequest(category, run, preset, tuple(overrides))


@pytest.mark.parametrize(
    "overrides, preset, message",
    [
        (("dpo.beta=-1",), "tiny", "dpo.beta must be positive"),
        (("dpo.nope=1",), "tiny", "Unknown setting dpo.nope"),
        ((), "no-such-preset", "No preset 'no-such-preset'"),
    ],
)
def test_bad_settings_are_refused_before_anything_starts(jobs, category, tmp_path, overrides, preset, message):
    run = tmp_path / "runs" / "r"
    with pytest.raises(HuviError, match=message):
        jobs.start(request(category, run, *overrides, preset=preset))
    assert not run.exists() and not (jobs.runs / LOCK_FILE).exists()


@pytest.mark.parametrize("case", sorted(k for k, c in BAD_CASES.items() if not c.decoding))  # decoding is the job's (below)
def test_a_category_that_cannot_train_is_refused_before_anything_starts(jobs, category_copy, tmp_path, case):
    BAD_CASES[case].mutate(category_copy)
    with pytest.raises(HuviError, match=BAD_CASES[case].message):
        jobs.start(request(category_copy, tmp_path / "runs" / "r"))


def test_an_existing_run_is_not_overwritten(jobs, category, tmp_path):
    run = fake_run(tmp_path / "runs" / "r", rows("motion", 2), None)
    with pytest.raises(HuviError, match="already holds a run"):
        jobs.start(request(category, run))


def test_the_gpu_lock_refuses_a_second_job_and_is_taken_over_when_stale(jobs, category, tmp_path):
    with jobs.hold("generating a video"):
        assert jobs.holder() == "generating a video"
        with pytest.raises(HuviError, match=rf"{BUSY} is busy \(generating a video\); one job runs at a time"):
            jobs.start(request(category, tmp_path / "runs" / "r"))
    assert jobs.holder() is None and not (jobs.runs / LOCK_FILE).exists()
    (jobs.runs / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "run": str(tmp_path / "runs" / "gone"), "what": "training gone"}))
    assert jobs.holder() is None
    with jobs.hold("generating"):  # the stale lock is taken over
        assert jobs.holder() == "generating"


def test_a_train_from_a_shell_takes_the_apps_gpu_lock(jobs, category, tmp_path, monkeypatch, capsys):
    """`python -m huvi train` and the app share one GPU: each refuses while the other holds it,
    with a sentence naming the holder; a job the app launched does not take the lock twice."""
    from huvi.cli import gpu_lock_for, main

    monkeypatch.setenv("HUVI_RUNS", str(jobs.runs))
    with jobs.hold("generating a video with demo-1"):
        code = main(["train", "--category", str(category), "--out", str(tmp_path / "shell"), "--preset", "tiny", "--steps", "1"])
    assert code == 2 and not (tmp_path / "shell").exists()
    assert capsys.readouterr().err.strip() == (
        f"error: {BUSY} is busy (generating a video with demo-1); one job runs at a time, so stop it or wait for it to finish."
    )

    with gpu_lock_for(tmp_path / "shell"):  # what cmd_train holds while it trains
        assert jobs.holder() == f"training shell from a shell, pid {os.getpid()}"
        with pytest.raises(HuviError, match=rf"{BUSY} is busy \(training shell from a shell, pid {os.getpid()}\)"):
            jobs.start(request(category, tmp_path / "runs" / "app-run"))
    assert jobs.holder() is None and not (jobs.runs / LOCK_FILE).exists()

    monkeypatch.setenv("HUVI_GPU_LOCK_HELD", "1")  # set by Jobs for its children: the app holds the lock for them
    with jobs.hold("training app-run"), gpu_lock_for(tmp_path / "app-run"):
        assert jobs.holder() == "training app-run"


def test_train_argv_is_the_cli_command(category, tmp_path):
    req = TrainRequest(category, tmp_path / "run", "tiny", ("motion.steps=3", "dpo.beta=2500"), ("motion",))
    argv = train_argv(req, python="python")
    assert argv == [
        "python", "-m", "huvi", "train", "--category", str(category), "--out", str(tmp_path / "run"),
        "--preset", "tiny", "--stage", "motion", "--set", "motion.steps=3", "--set", "dpo.beta=2500",
    ]
    assert display_command(["/usr/bin/python3", "-m", "huvi", "--out", str(tmp_path / "my run")], cwd=tmp_path) == "python -m huvi --out 'my run'"


# what a starting job is doing -------------------------------------------------------------------
START_LOG = [
    ("", "loading Python and its libraries (torch, diffusers)"),
    ("19:13:25 INFO huvi: preset tiny (no --preset given: chosen for this machine)\n", "reading the clips and loading the encoders"),
    ("caching latents:   0%|     | 0/12 [00:00<?, ?clip/s]\rcaching latents:  42%|####1     | 5/12 [00:00<00:00,  7.7clip/s]", "encoding the clips (5 of 12)"),
    ("\r\n19:13:27 INFO huvi.trainer: 54 preference pairs: 54 for training, 0 held out\n", "building the video model"),
    ("19:13:28 INFO huvi.trainer: stage motion: 2 steps from step 0, 0.87M trainable parameters, fp32 precision\nmotion:   0%|   | 0/2 [00:00<?, ?step/s]",
     "running the first motion step (the slowest: memory is laid out, kernels are chosen)"),
]


def test_a_starting_job_says_what_it_is_doing(jobs, tmp_path):
    """The ~50 s before the first step, phase by phase, from the lines job.log gets (the CLI's, the cache's bar, the trainer's)."""
    log = ""
    for lines, phase in START_LOG:
        log += lines
        assert start_phase(log) == phase
    run = fake_run(tmp_path / "starting", [], {"pid": os.getpid(), "started": time.time() - 12}, log=START_LOG[1][0] + START_LOG[2][0], config=False)
    monkey = jobs._alive
    jobs._alive = lambda pid, run: True  # this test process stands in for the job
    try:
        status = jobs.status(run)
    finally:
        jobs._alive = monkey
    assert status.state == "starting" and status.message == "Starting: encoding the clips (5 of 12)."
    assert status.phase == "encoding the clips (5 of 12)" and 12 <= status.elapsed < 60


@pytest.mark.parametrize("cores, load, threads", [(2, 0.0, 2), (2, 0.4, 2), (2, 1.6, 1), (2, 3.7, 1), (16, 5.2, 11), (1, 0.0, 1)])
def test_training_threads_follow_the_free_cores(cores, load, threads):
    assert free_cores(cores, load) == threads


# real jobs ---------------------------------------------------------------------------------------
def test_start_stop_resume_finish(jobs, category, trained_run, tmp_path):
    run = tmp_path / "runs" / "demo"
    jobs.models.get(trained_run.root)  # a model the Generate tab loaded: a job that trains needs its memory
    status = jobs.start(request(category, run, "motion.steps=5", "dpo.steps=3"))
    assert jobs.models.loaded is None
    assert status.state == "starting" and status.can_stop
    job = read_job(run)
    assert job["command"].startswith("python -m huvi train --category ") and "--set motion.steps=5 --set dpo.steps=3" in job["command"]
    assert job["totals"] == {"motion": 5, "dpo": 3} and job["first_command"] == job["command"]
    assert jobs.active() == run.resolve()
    with pytest.raises(HuviError, match="demo is training; stop it before deleting it"):
        jobs.delete(run)

    with pytest.raises(HuviError, match=rf"{BUSY} is busy \(training demo\)"):
        jobs.start(request(category, tmp_path / "runs" / "second", "motion.steps=1", "dpo.steps=1"))
    assert not (tmp_path / "runs" / "second").exists()

    # The CLI installs its SIGTERM handler before it writes config.yaml: a stop now is a clean one.
    wait_for(lambda: Run(run).exists(), what="config.yaml")
    assert jobs.status(run).active
    jobs.stop(run)
    stopping = jobs.stop(run)  # a second click does not signal again (that would abort without a checkpoint)
    assert stopping.state in ("running", "stopped") and not stopping.can_stop
    stopped = wait_for(lambda: (s := jobs.status(run)).state != "running" and s.state != "starting" and s, what="the stop")
    assert stopped.state == "stopped", stopped.message
    assert stopped.can_resume and not stopped.can_stop
    assert "Stopped; continue with: python -m huvi train" in (run / JOB_LOG).read_text()  # the CLI's exit-130 path
    step = stopped.progress.step
    assert stopped.progress.stage == "motion" and 1 <= step < 5
    with pytest.raises(HuviError, match="is not running"):
        jobs.stop(run)

    resumed = jobs.resume(run)
    assert resumed.active and read_job(run)["resumed"] is True and "--resume" in read_job(run)["command"]
    assert resumed.first_command == job["command"]  # the settings the run started with stay in view
    assert resumed.started >= job["started"] and resumed.elapsed is not None
    finished = wait_for(lambda: (s := jobs.status(run)).state not in ("starting", "running") and s, what="the resumed job")
    assert finished.state == "finished", finished.message + (run / JOB_LOG).read_text()
    assert (finished.progress.done, finished.progress.total) == (8, 8)
    steps = [(r["stage"], r["step"]) for r in metric_rows(run)]
    assert steps == [("motion", s) for s in range(1, 6)] + [("dpo", s) for s in range(1, 4)]
    assert jobs.active() is None
    with pytest.raises(HuviError, match="cannot be resumed"):
        jobs.resume(run)
    assert finished.ended >= finished.started and finished.elapsed == finished.ended - finished.started
    jobs.delete(run)
    assert not run.exists()


def test_a_failing_job_reports_its_sentence_and_the_run_can_be_started_again(jobs, category_copy, tmp_path):
    BAD_CASES["unreadable_clip"].mutate(category_copy)
    run = tmp_path / "runs" / "bad"
    jobs.start(request(category_copy, run, "motion.steps=1", "dpo.steps=1"))
    failed = wait_for(lambda: (s := jobs.status(run)).state not in ("starting", "running") and s, what="the failing job")
    assert failed.state == "failed"
    assert "could not be decoded as a video" in failed.message and "\n" not in failed.message
    assert not failed.can_resume
    assert sorted(p.name for p in run.iterdir()) == [JOB_FILE, JOB_LOG]  # the trainer wrote nothing

    name = min(json.loads((category_copy / "category.json").read_text())["scores"])
    (category_copy / "clips" / name).unlink()
    restore_clip(category_copy, name)
    again = jobs.start(request(category_copy, run, "motion.steps=1", "dpo.steps=1"))
    assert again.active  # a folder holding only a failed start's job files is reused
    jobs.stop(run)


def restore_clip(category: Path, name: str) -> None:
    """Put a decodable clip back under `name`."""
    from huvi.synthetic import moving_square
    from huvi.video import write_clip

    write_clip(category / "clips" / name, moving_square(1, seed=3, frames=32, size=32))
