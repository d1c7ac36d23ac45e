"""Background training: `python -m huvi train` in its own process, watched through the run folder.

The app never trains in its own process. `Jobs.start` launches the CLI in a new process group with
its output in RUN/job.log and records RUN/job.json; everything the app shows afterwards is read
back from the run folder, so a page reload, a second browser or a restarted app re-attaches:

    RUN/job.json      {"pid", "command", "argv", "started", "category", "preset", "stages", "totals",
                       "first_command", "resumed"?, "stop_requested"?}
    RUN/job.log       the process's stdout and stderr (the CLI's one-sentence errors land here)

"command" is the latest launch (`--resume` after a resume); "first_command" the `train` line that
set the run's settings, kept across resumes (huvi.train_command rebuilds it from the run's own
config.yaml for a run started from a shell).

`Jobs.status` turns the pid, RUN/metrics.jsonl, RUN/checkpoints/ and RUN/adapters/ into one of
    starting      the process is up, loading models and caching clips (no metrics yet; huvi.job_log
                  reads which of these it is doing)
    running       the process is up and writing metrics
    finished      every stage's adapter is written
    stopped       a stop request ended it cleanly: the newest checkpoint is the last step logged
    failed        it ended with an error sentence (or a traceback) in job.log
    interrupted   it ended otherwise (killed, crashed, machine restarted); resume from the newest checkpoint

Stop sends SIGTERM to the process group; the CLI finishes the step, writes a checkpoint and exits
130. Resume runs `train --out RUN --resume`. One GPU job runs at a time: the app holds the GPU
lock (huvi.gpu_lock, RUNS/.gpu.lock) for each job it launches, which a `train` from a shell takes too.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from huvi.category import load_category
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.gpu_lock import HELD_BY_PARENT, GpuLock, pid_alive
from huvi.io import write_json
from huvi.job_log import failure_sentence, read_log, start_phase
from huvi.model_cache import ModelCache
from huvi.runs import JOB_FILE, JOB_FILES, JOB_LOG, STAGES, Run
from huvi.train_command import TrainRequest, display_command, first_command, resume_argv, train_argv

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).parent.parent  # `python -m huvi` there runs this very package
RECENT_SECONDS = 120  # a run without job.json whose metrics changed this recently counts as running elsewhere


@dataclass(frozen=True)
class Progress:
    stage: str | None  # the stage of the newest metrics row
    step: int  # its step
    done: int  # steps done over all requested stages
    total: int  # steps of all requested stages
    seconds_per_step: float | None  # mean over the newest rows of the current stage
    eta_seconds: float | None  # remaining steps at that rate (later stages are assumed as fast)
    totals: dict[str, int] = field(default_factory=dict)  # stage -> its planned steps, for each stage the run trains

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def progress(rows: list[dict], totals: dict[str, int], window: int = 20) -> Progress:
    """Progress and ETA from metrics rows (each with "stage", "step" and "seconds")."""
    last_step = {stage: 0 for stage in totals}
    for row in rows:
        if row.get("stage") in last_step:
            last_step[row["stage"]] = max(last_step[row["stage"]], int(row.get("step", 0)))
    done = sum(min(last_step[s], totals[s]) for s in totals)
    total = sum(totals.values())
    if not rows:
        return Progress(None, 0, done, total, None, None, dict(totals))
    stage, step = rows[-1].get("stage"), int(rows[-1].get("step", 0))
    recent = [float(r["seconds"]) for r in rows[-window:] if r.get("stage") == stage and "seconds" in r]
    rate = sum(recent) / len(recent) if recent else None
    return Progress(stage, step, done, total, rate, (total - done) * rate if rate is not None else None, dict(totals))


@dataclass(frozen=True)
class JobStatus:
    run: Path
    state: str  # "none", "starting", "running", "finished", "stopped", "failed" or "interrupted"
    message: str  # one sentence for the user
    progress: Progress
    can_stop: bool
    can_resume: bool
    command: str  # the CLI line of the latest launch ("" when unknown)
    first_command: str = ""  # the `train` line that set the run's settings (differs from `command` after a resume)
    started: float | None = None  # when the latest launch started (epoch seconds)
    ended: float | None = None  # when its process last wrote (finished, stopped, failed or interrupted runs)
    phase: str = ""  # while starting: what the process is doing (see start_phase)

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def elapsed(self) -> float | None:
        """Seconds since the latest launch: until now while it runs, until its end otherwise."""
        if self.started is None:
            return None
        end = time.time() if self.active else self.ended
        return max(0.0, end - self.started) if end is not None else None


class Jobs:
    """Training processes of one runs folder."""

    def __init__(self, runs: Path, python: str = sys.executable) -> None:
        self.runs = Path(runs)
        self.python = python
        self.models = ModelCache()  # the app's loaded video model between Generate clicks, freed before a job trains
        self._procs: dict[int, subprocess.Popen] = {}  # children of this process, polled to reap them
        self._mutex = threading.Lock()
        self.gpu = GpuLock(self.runs, self._holder_alive)

    # launching --------------------------------------------------------------------------------
    def start(self, request: TrainRequest) -> JobStatus:
        """Launch a new run; a HuviError (one sentence) when the input or the GPU is not ready."""
        cfg = load_config(request.preset, list(request.overrides))  # bad settings fail here, not in the job
        category = load_category(request.category)  # as does a category that cannot train (clips are decoded by the job)
        run = Path(request.run)
        if Run(run).holds_files():
            raise HuviError(f"{run.name} already holds a run; choose another run name, or resume that run.")
        stages = [s for s in STAGES if s in request.stages]
        totals = {s: cfg.stage(s).steps for s in stages}
        argv = train_argv(TrainRequest(category.root.resolve(), run.resolve(), request.preset, request.overrides, tuple(stages), request.mode), self.python)
        record = {"category": str(category.root.resolve()), "preset": request.preset, "stages": stages, "totals": totals}
        return self._launch(run, argv, record | {"first_command": display_command(argv)})

    def resume(self, run: Path) -> JobStatus:
        """Continue a stopped, interrupted or failed run from its newest checkpoint."""
        run = Path(run)
        status = self.status(run)
        if status.active:
            raise HuviError(f"{run.name} is still running.")
        if not status.can_resume:
            raise HuviError(f"{run.name} cannot be resumed: {status.message}")
        job = read_job(run) or {}
        category = job.get("category") or Run(run).read_info().get("category")
        if not category:
            raise HuviError(f"{run.name} does not record its category; resume it with `python -m huvi train --category DIR --out {run} --resume`.")
        stages = job.get("stages") or list(STAGES)
        cfg = Run(run).read_config()
        totals = {s: cfg.stage(s).steps for s in stages}
        argv = resume_argv(Path(category), run.resolve(), self.python)
        if tuple(stages) != STAGES:
            argv += ["--stage", stages[0]]
        record = {"category": category, "preset": cfg.preset, "stages": stages, "totals": totals, "resumed": True}
        return self._launch(run, argv, record | {"first_command": first_command(run, job)})

    def _launch(self, run: Path, argv: list[str], record: dict) -> JobStatus:
        with self._mutex, self.gpu.take(f"training {run.name}", run, keep=True) as set_holder:
            self.models.release()  # the job needs the GPU's memory
            run.mkdir(parents=True, exist_ok=True)
            for name in JOB_FILES:
                (run / name).unlink(missing_ok=True)
            env = os.environ | {"PYTHONUNBUFFERED": "1", HELD_BY_PARENT: "1"}  # the job runs under this lock
            with open(run / JOB_LOG, "wb") as log:
                proc = subprocess.Popen(
                    argv, cwd=PACKAGE_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            self._procs[proc.pid] = proc
            set_holder(proc.pid)
            write_json(run / JOB_FILE, {"pid": proc.pid, "command": display_command(argv), "argv": argv, "started": time.time()} | record)
        logger.info("started training %s (pid %d): %s", run.name, proc.pid, shlex.join(argv))
        return self.status(run)

    def stop(self, run: Path) -> JobStatus:
        """Ask the job to stop: SIGTERM to its process group; it checkpoints and exits 130.

        Asked once only: a second SIGTERM would make the CLI abort without a checkpoint."""
        run = Path(run)
        job = read_job(run)
        if not job or not self._alive(job["pid"], run):
            raise HuviError(f"{run.name} is not running.")
        if job.get("stop_requested"):
            return self.status(run)
        write_json(run / JOB_FILE, job | {"stop_requested": time.time()})
        try:
            if hasattr(os, "killpg"):
                os.killpg(job["pid"], signal.SIGTERM)
            else:
                os.kill(job["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended in between
        logger.info("asked %s (pid %d) to stop", run.name, job["pid"])
        return self.status(run)

    def delete(self, run: Path) -> None:
        """Delete a run folder and everything in it; refused while the run trains."""
        run = Path(run)
        if not run.is_dir():
            raise HuviError(f"There is no run {run.name}; refresh the list of runs.")
        training = self.active()
        if self.status(run).active or (training is not None and training.resolve() == run.resolve()):
            raise HuviError(f"{run.name} is training; stop it before deleting it.")
        shutil.rmtree(run)
        logger.info("deleted run %s", run)

    # the GPU lock -----------------------------------------------------------------------------
    def holder(self) -> str | None:
        """What holds the GPU lock now ("training <run>", "generating ...", a run from a shell), or None."""
        return self.gpu.holder()

    @contextmanager
    def hold(self, what: str) -> Iterator[None]:
        """Hold the GPU lock in this process while the block runs (e.g. while generating)."""
        with self.gpu.take(what):
            yield

    def _holder_alive(self, pid: int, run: Path | None) -> bool:
        return self._alive(pid, run) if run is not None else pid_alive(pid, None)

    # status -----------------------------------------------------------------------------------
    def _alive(self, pid: int, run: Path) -> bool:
        proc = self._procs.get(pid)
        if proc is not None:
            if proc.poll() is None:
                return True
            self._procs.pop(pid, None)  # status may be asked from several threads at once
            return False
        return pid_alive(pid, run)

    def active(self) -> Path | None:
        """The run the app is training now, if any."""
        lock = self.gpu.live()
        return Path(lock["run"]) if lock and lock.get("run") else None

    def status(self, run: Path) -> JobStatus:
        run = Path(run)
        job = read_job(run)
        rows = Run(run).read_metrics()
        totals = _totals(run, job, rows)
        prog = progress(rows, totals)
        command = job.get("command", "") if job else ""
        started = float(job["started"]) if job and isinstance(job.get("started"), (int, float)) else None

        def make(state: str, message: str, can_stop: bool = False, can_resume: bool = False, phase: str = "") -> JobStatus:
            active = state in ("starting", "running")
            ended = None if active else _last_write(run)
            return JobStatus(run, state, message, prog, can_stop, can_resume, command, first_command(run, job), started, ended, phase)

        if job is None and not Run(run).exists():
            return make("none", f"{run.name} has not been started.")
        if job is not None and self._alive(job["pid"], run):
            if job.get("stop_requested"):
                return make("running", "Stopping: finishing the current step, then writing a checkpoint.")
            if not rows:
                phase = start_phase(read_log(run))
                return make("starting", f"Starting: {phase}.", can_stop=True, phase=phase)
            return make("running", f"Training the {prog.stage} stage: step {prog.step} of {totals.get(prog.stage, '?')}.", can_stop=True)
        if totals and all(Run(run).adapter_path(s).is_file() for s in totals):
            return make("finished", f"Finished: {' and '.join(totals)} adapter{'s' if len(totals) > 1 else ''} written.")
        checkpoint = Run(run).latest_checkpoint()
        resumable = checkpoint is not None or Run(run).exists()
        if job is None and rows and time.time() - Run(run).metrics_path.stat().st_mtime < RECENT_SECONDS:
            return make("running", "Training, started outside the app (it can only be stopped where it was started).")
        failure = failure_sentence(read_log(run), run) if job is not None else None
        if failure:
            return make("failed", failure, can_resume=resumable and checkpoint is not None)
        last = (rows[-1]["stage"], rows[-1]["step"]) if rows else None
        if checkpoint is not None and last == (checkpoint.stage, checkpoint.step):
            return make("stopped", f"Stopped at {checkpoint.stage} step {checkpoint.step}; resume continues from there.", can_resume=True)
        if not resumable:
            return make("interrupted", "The training process ended before training began; start the run again under this name.")
        where = f"from {checkpoint.stage} step {checkpoint.step}" if checkpoint else "from the start"
        return make("interrupted", f"The training process ended without finishing; resume continues {where}.", can_resume=True)


def _last_write(run: Path) -> float | None:
    """When the run's process last wrote: the newest of job.log, metrics.jsonl and the adapters."""
    paths = [Path(run) / JOB_LOG, Run(run).metrics_path, *(Run(run).adapter_path(s) for s in STAGES)]
    stamps = [p.stat().st_mtime for p in paths if p.is_file()]
    return max(stamps) if stamps else None


def read_job(run: Path) -> dict | None:
    try:
        return json.loads((Path(run) / JOB_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _totals(run: Path, job: dict | None, rows: list[dict]) -> dict[str, int]:
    """Steps per requested stage: from the run's config when written, else from job.json."""
    if job and job.get("totals"):
        totals = {s: int(n) for s, n in job["totals"].items()}
    else:
        stages = sorted({r["stage"] for r in rows if r.get("stage") in STAGES} | {s for s in STAGES if Run(run).adapter_path(s).is_file()}, key=STAGES.index)
        totals = dict.fromkeys(stages or STAGES, 0)
    if Run(run).exists():
        try:
            cfg = Run(run).read_config()
            totals = {s: cfg.stage(s).steps for s in totals}
        except HuviError:
            pass
    return totals
