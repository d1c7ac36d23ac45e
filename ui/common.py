"""What every tab's handlers share: the app's folders, jobs and default preset (`Context`), the lists
several tabs show (categories, runs), and the wrappers that turn a HuviError into a toast and a
function into a ZeroGPU task.

A HuviError a user can cause is shown as a `gr.Error` toast with its one sentence; anything else is
a bug and keeps its traceback in the server log. State that must survive a reload lives on disk:
category folders, run folders and their job.json.
"""

from __future__ import annotations

import functools
import html
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from huvi.catalogue import PresetChoice, family_entries, family_title, preset_entry, weight_sources
from huvi.config import load_config, preset_names
from huvi.errors import HuviError
from huvi.jobs import Jobs
from huvi.runs import STAGES, Run
from huvi.workspace import Workspace


def user_errors(fn):
    """Show a HuviError as a toast with its sentence instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HuviError as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def gpu_task(fn):
    """`spaces.GPU` on Hugging Face Spaces (ZeroGPU), the function itself elsewhere."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=300)(fn)


def dropdown(choices: list, value=None, keep: bool = False) -> gr.Dropdown:
    """`choices` with `value` picked when it is one of them, else the first (None when empty).

    With `keep` (a list refreshed on load, on a tab opened, on Refresh) a `value` that is still a
    choice is left to the browser: events of one page run side by side, so a refresh answered late
    must not undo a pick made meanwhile."""
    keys = [c[1] if isinstance(c, tuple) else c for c in choices]
    if value in keys:
        return gr.Dropdown(choices=choices) if keep else gr.Dropdown(choices=choices, value=value)
    return gr.Dropdown(choices=choices, value=keys[0] if keys else None)


def file_url(path: Path) -> str:
    """The URL the app serves a file under (its folders are the app's allowed paths), for HTML."""
    return "/gradio_api/file=" + quote(str(Path(path).resolve()))


def names(items: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in items)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    """42 s, 3 min 10 s, 1 h 05 min."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest:02d} s" if minutes < 10 else f"{round(seconds / 60)} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {round(rest / 60):02d} min"


def clock(epoch: float) -> str:
    """Local wall-clock time: 14:32, or "Tue 14:32" when not today."""
    stamp = time.localtime(epoch)
    return time.strftime("%H:%M" if stamp[:3] == time.localtime()[:3] else "%a %H:%M", stamp)


def escape(text: str) -> str:
    return html.escape(text, quote=True)


@dataclass
class Context:
    """The app's folders (`ws`), its training jobs and GPU lock (`jobs`) and this machine's preset."""

    ws: Workspace
    jobs: Jobs
    preset: PresetChoice  # the default preset for this machine

    @staticmethod
    def presets() -> list[str]:
        return preset_names()

    def min_rating_gap(self) -> int:
        """data.min_rating_gap of this machine's preset: how far apart two ratings must be to pair."""
        return load_config(self.preset.name).data.min_rating_gap

    # categories --------------------------------------------------------------------------------
    def categories(self) -> list[str]:
        return self.ws.list_categories()

    def default_category(self) -> str | None:
        names = self.categories()
        return names[0] if names else None

    def category_dropdown(self, value: str | None = None, keep: bool = True) -> gr.Dropdown:
        return dropdown(self.categories(), value, keep)

    def category_root(self, name: str | None) -> Path:
        return self.ws.existing_category(name)

    # runs --------------------------------------------------------------------------------------
    def runs(self) -> list[str]:
        return self.ws.list_runs()

    def run_dropdown(self, value: str | None = None, keep: bool = True) -> gr.Dropdown:
        return dropdown(self.runs(), value, keep)

    def trained_runs(self) -> list[str]:
        return [name for name in self.runs() if any(Run(self.ws.runs / name).adapter_path(s).is_file() for s in STAGES)]

    def trained_run_dropdown(self, value: str | None = None, keep: bool = True) -> gr.Dropdown:
        return dropdown(self.trained_runs(), value, keep)

    def run_dir(self, name: str | None) -> Path:
        if not name:
            raise HuviError("Pick a run first.")
        return self.ws.run_dir(name)

    # the banner --------------------------------------------------------------------------------
    def banner(self) -> str:
        """This machine's preset and why; for a CPU preset, what it is for and how to get the real model."""
        picker = "Pick the model family and its preset in the **4 · Train** tab: each preset says its VRAM tier and what it gives up."
        entry = preset_entry(self.preset.name)
        if entry is None or not entry.cpu:
            return f"**Preset `{self.preset.name}`** — {self.preset.reason} {picker}"
        smallest = min((e.gib[0] for e in family_entries(entry.family) if not e.cpu), default=12)
        fetch = " and ".join(f"`hf download {source}`" for source in weight_sources(load_config(entry.reference).model))
        if load_config(entry.name).model.source == "tiny":
            what = (
                "huvi uses small random-weight models built in code: they run the whole flow (rate clips, train both "
                "stages, generate, export) on a CPU in minutes and learn toy preferences such as the demo's sliding "
                "squares, but they do not make real video."
            )
        else:
            what = (
                "huvi uses its demo model, a small video model of the SD1.5 family trained on clips of moving shapes "
                "(it ships with huvi): it runs the whole flow (rate clips, train both stages, generate, export) on a "
                "CPU in minutes and generates clips in which a shape moves, but it does not make real video."
            )
        return (
            f"**{entry.name.capitalize()} preset** — {self.preset.reason} {what} For the real "
            f"model ({family_title(entry.family)}, a GPU with {smallest} GB or more), download the weights once "
            f"and restart the app:\n\n{fetch}\n\n{picker}"
        )
