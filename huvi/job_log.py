"""What a background job's output (RUN/job.log, huvi.jobs) says: the phase a starting job is in, the
one-sentence error a failed one ended with, and its last lines for the app's log view.

job.log holds the CLI's stdout and stderr: log lines, the one-sentence `error: ...` of bad input,
a traceback for a bug, and tqdm bars that rewrite their line with carriage returns (only a bar's
latest state counts).
"""

from __future__ import annotations

import re
from pathlib import Path

from huvi.runs import JOB_LOG, Run

# What a starting job logs, newest first, and what it means (the CLI, huvi.cache and huvi.trainer write these lines).
_PHASES = (
    (re.compile(r"\bstage (motion|dpo): "), lambda m: f"running the first {m[1]} step (the slowest: memory is laid out, kernels are chosen)"),
    (re.compile(r"preference pairs|segment-labelled pairs"), lambda m: "building the video model"),
    (re.compile(r"caching latents:\s+\d+%\|.*?\| (\d+)/(\d+)"), lambda m: f"encoding the clips ({m[1]} of {m[2]})"),
    (re.compile(r"CPU threads|preset \S+"), lambda m: "reading the clips and loading the encoders"),
)


def read_log(run: Path) -> str:
    """RUN/job.log as text ("" when there is none), carriage returns kept."""
    try:
        return (Path(run) / JOB_LOG).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _lines(text: str) -> list[str]:
    """The non-empty lines of `text`, each bar at its latest state."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line.strip()]


def start_phase(log: str) -> str:
    """What a starting job is doing, read from the newest recognised line of its job.log."""
    for line in reversed(_lines(log)):
        for pattern, say in _PHASES:
            if match := pattern.search(line):
                return say(match)
    return "loading Python and its libraries (torch, diffusers)"


def failure_sentence(log: str, run: Path) -> str | None:
    """The error sentence a failed job ended with, or None when its log shows no error."""
    lines = [line.strip() for line in log.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return f"The training process crashed with {lines[-1]!r} (a bug; the traceback is in {Path(run).name}/{JOB_LOG})."
    return None


def log_tail(run: Path, count: int = 40) -> str:
    """The last `count` lines of the job's output (job.log), or of train.log for a run started outside the app."""
    text = read_log(run)
    if not text and Run(run).log_path.is_file():
        text = Run(run).log_path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(_lines(text)[-count:])
