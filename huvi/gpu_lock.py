"""One GPU job at a time: the lock that training and generating take, from the app or a shell.

    RUNS/.gpu.lock          {"pid", "run", "what"}: who holds the GPU; a lock whose holder is gone is taken over
    RUNS/.gpu.lock.guard    flock'ed while the lock is read and taken, so two takers never both win

RUNS is the app's runs folder (`$HUVI_RUNS`, default `runs` beside `$HUVI_HOME`; huvi.workspace).
The app takes the lock for each training job it launches (held in the job's name until the job
ends) and while it generates; `python -m huvi train` from a shell takes the same lock for its own
lifetime, so a shell run and an app run never share a GPU and run out of memory together. A job
launched by the app finds `HUVI_GPU_LOCK_HELD=1` in its environment: the app holds it on its behalf.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from huvi.errors import HuviError
from huvi.io import file_lock, write_json

LOCK_FILE = ".gpu.lock"
GUARD_FILE = ".gpu.lock.guard"
HELD_BY_PARENT = "HUVI_GPU_LOCK_HELD"  # set in a job's environment by the process that holds the lock for it

Alive = Callable[[int, Path | None], bool]  # (pid, run or None) -> whether that holder still runs


class GpuLock:
    """The GPU lock of one runs folder. `alive(pid, run)` tells whether a holder still runs."""

    def __init__(self, runs: Path, alive: Alive) -> None:
        self.runs = Path(runs)
        self._alive = alive

    def read(self) -> dict | None:
        """The holder's record, alive or not (None when there is none or it is unreadable)."""
        try:
            lock = json.loads((self.runs / LOCK_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return lock if isinstance(lock, dict) and isinstance(lock.get("pid"), int) else None

    def live(self) -> dict | None:
        """The holder's record while its holder runs, else None."""
        lock = self.read()
        if lock is None:
            return None
        if lock["pid"] == os.getpid():
            return lock  # held by this process: generating, or launching a job (its pid replaces ours)
        return lock if self._alive(lock["pid"], Path(lock["run"]) if lock.get("run") else None) else None

    def holder(self) -> str | None:
        """What holds the GPU now ("training demo-1", "generating a video with demo-1", ...), or None."""
        lock = self.live()
        return lock.get("what") if lock else None

    @contextmanager
    def take(self, what: str, run: Path | None = None, keep: bool = False) -> Iterator[Callable[[int], None]]:
        """Hold the lock as `what` while the block runs; a HuviError naming the holder when it is taken.

        The block gets `set_holder(pid)`, which hands the lock to another process (a job just
        launched). With `keep` the lock stays after the block, for that process, and goes stale when
        it ends; otherwise it is released at the end of the block. Reading the lock and taking it is
        one step under the guard's flock, so two apps (or a stale lock taken over by two at once)
        can never both start a job."""
        self.runs.mkdir(parents=True, exist_ok=True)
        path = self.runs / LOCK_FILE
        record = {"pid": os.getpid(), "run": str(Path(run).resolve()) if run else None, "what": what}
        with file_lock(self.runs / GUARD_FILE):
            lock = self.live()
            if lock is not None:
                raise HuviError(f"{busy_subject()} is busy ({lock.get('what', 'another job')}); one job runs at a time, so stop it or wait for it to finish.")
            write_json(path, record)  # replaces a lock whose holder is gone

        def set_holder(pid: int) -> None:
            write_json(path, record | {"pid": pid})

        try:
            yield set_holder
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if not keep:
            path.unlink(missing_ok=True)


def busy_subject() -> str:
    """What a running job occupies, in words: "The GPU", or "This machine" on one without a CUDA GPU."""
    import torch  # here: the lock itself is read by light processes too

    return "The GPU" if torch.cuda.is_available() else "This machine"


def held_by_parent() -> bool:
    """Whether the process that launched this one holds the lock on its behalf (the app's jobs)."""
    return os.environ.get(HELD_BY_PARENT) == "1"


def pid_alive(pid: int, run: Path | None) -> bool:
    """Whether `pid` runs (not a zombie) and, given `run`, is a huvi process training that folder."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc: trust the signal check
    try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if not cmdline:
        return False  # a zombie
    return run is None or ("huvi" in cmdline and str(Path(run).resolve()) in cmdline)
