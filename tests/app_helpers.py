"""What the app's API tests share (tests/test_app.py, tests/test_app_models.py): one app launched in
this process on a free local port over fresh folders, every tab's handlers over the same folders, and
waiting for a training job through the API. Imports gradio: only the app's tests import it."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from gradio_client import Client

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `ui` sits beside `huvi` at the repository root

from huvi.catalogue import PresetChoice
from huvi.jobs import Jobs
from huvi.workspace import Workspace
from ui.app import build_app
from ui.category import CategoryHandlers
from ui.common import Context
from ui.generating import GenerateHandlers
from ui.labelling import LabelHandlers
from ui.pairs import PairsHandlers
from ui.rating import RateHandlers
from ui.runs import RunsHandlers
from ui.training import TrainHandlers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tabs:
    """Every tab's handlers over one app's folders and jobs, as build_app makes them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.ws, self.jobs, self.preset = ctx, ctx.ws, ctx.jobs, ctx.preset

        def make(cls):
            return cls(ctx.ws, ctx.jobs, ctx.preset)

        self.clips, self.rate, self.pairs, self.train = make(CategoryHandlers), make(RateHandlers), make(PairsHandlers), make(TrainHandlers)
        self.generate, self.runs, self.labels = make(GenerateHandlers), make(RunsHandlers), make(LabelHandlers)


@contextlib.contextmanager
def served_app(root: Path) -> Iterator[tuple[Workspace, Tabs, Client]]:
    """The app over ROOT/data (the demo category copied in) and ROOT/runs with the tiny preset as this
    machine's, served locally; (its folders, its tabs' handlers, an API client). Its jobs are killed after."""
    ws = Workspace(root / "data", root / "runs")
    ws.prepare()
    ctx = Context(ws, Jobs(ws.runs), PresetChoice("tiny", "Tests run on the CPU."))
    demo = build_app(ctx)
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, allowed_paths=[str(ws.categories), str(ws.runs)])
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(root / "downloads"), analytics_enabled=False)
    try:
        yield ws, Tabs(ctx), client
    finally:
        for proc in ctx.jobs._procs.values():
            if proc.poll() is None:
                proc.kill()
        demo.close()


def wait_for_state(client: Client, run: str, timeout: float = 240) -> dict:
    """The job status of `run` once it is neither starting nor running."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.predict(run, api_name="/job_status")
        if status["state"] not in ("starting", "running"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"{run} still {status['state']} after {timeout} s")
