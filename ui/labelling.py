"""Handlers of the DenseDPO tab: make aligned pairs with a trained run, then label each pair
segment by segment (first better, second better, tie) while both clips play in sync.

The labels are written to category.json as they are clicked (`huvi.pair_edits.label_segment`), so
`python -m huvi train --mode dense` (or the Train tab with "segment labels") trains on exactly what
is shown here. A pair is named in widgets by its clip names, JSON-encoded: its place in the list
changes when pairs are added or removed, its clips do not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr

from huvi.adapters import MOTION
from huvi.category import read_pairs
from huvi.config import DataConfig, load_config
from huvi.errors import HuviError
from huvi.families import frames_per_latent
from huvi.pair_edits import label_pair, label_segment, remove_pair
from huvi.pair_view import Segment, clip_fps, pair_config, pair_preview, pair_segments, remove_previews
from huvi.pairs import ExplicitPair
from huvi.runs import Run
from huvi.segments import count_choices, default_count, split_frames
from huvi.workspace import list_clips
from ui.common import Context, dropdown, gpu_task, user_errors

logger = logging.getLogger(__name__)

# What each label means on screen: clip a plays on the left ("first"), clip b on the right ("second").
LABEL_CHOICES = [("first (left) better", "a"), ("second (right) better", "b"), ("tie", "tie")]
LABEL_TEXT = {"a": "first", "b": "second", "tie": "tie", None: "?"}
LABEL_COLORS = {"a": "#4f46e5", "b": "#d97706", "tie": "#6b7280", None: "transparent"}


@gpu_task
def _aligned_pairs_on_gpu(models, run_dir: Path, category: Path, clips, eta: float, seed: int, segments, progress):
    from huvi.dense import make_aligned_pairs

    return make_aligned_pairs(run_dir, category, clips or None, eta, seed, segments, progress=progress, show_progress=False, models=models)


def pair_key(pair: ExplicitPair) -> str:
    return json.dumps([pair.a, pair.b])


def pair_title(i: int, pair: ExplicitPair) -> str:
    done = sum(label is not None for label in pair.labels)
    state = "✔" if done == len(pair.labels) else f"{done}/{len(pair.labels)} labelled"
    return f"{i}. {pair.a} vs {pair.b} — {state}"


class LabelHandlers(Context):
    # reading -----------------------------------------------------------------------------------
    def _root(self, category: str | None) -> Path:
        return self.category_root(category)

    def _pair(self, root: Path, key: str | None) -> ExplicitPair:
        if not key:
            raise HuviError("Pick a pair first, or make aligned pairs above.")
        a, b = json.loads(key)
        for pair in read_pairs(root):
            if (pair.a, pair.b) == (a, b):
                return pair
        raise HuviError(f"{a} vs {b} is no longer a pair of {root.name}; refresh the list of pairs.")

    def _window(self, root: Path, pair: ExplicitPair) -> tuple[DataConfig, int]:
        """The training window the pair's segments refer to: (data config, frames per latent frame)."""
        cfg = pair_config(root, pair, load_config(self.preset.name))
        return cfg.data, frames_per_latent(cfg.model)

    @staticmethod
    def working_on(category: str | None) -> str:
        if not category:
            return "**No category picked**: pick or create one in the **1 · Category** tab."
        return f"**Category {category}** (pick another in the **1 · Category** tab)."

    def pairs(self, category: str | None) -> list[tuple[str, str]]:
        """(title, key) of every explicit pair of the category, in file order."""
        try:
            root = self._root(category)
        except HuviError:
            return []
        return [(pair_title(i, p), pair_key(p)) for i, p in enumerate(read_pairs(root), start=1)]

    def pair_dropdown(self, category: str | None, value: str | None = None, keep: bool = True):
        return dropdown(self.pairs(category), value, keep)

    def source_clips(self, category: str | None, chosen: list[str] | None = None):
        """The rated clips aligned pairs can be made from (none chosen: every one), keeping the
        chosen ones that are still there."""
        try:
            names = [e.name for e in list_clips(self._root(category)) if e.score is not None]
        except HuviError:
            names = []
        return gr.Dropdown(choices=names, value=[n for n in chosen or [] if n in names])

    def runs(self) -> list[str]:
        """Runs with a trained motion adapter: the models that can make aligned pairs."""
        return [name for name in self.ws.list_runs() if Run(self.ws.runs / name).adapter_path(MOTION).is_file()]

    def segment_count(self, run: str | None) -> gr.Number:
        """The segment count a new pair gets from the run's settings, shown as the field's value."""
        try:
            cfg = Run(self.run_dir(run)).read_config()
        except HuviError:
            return gr.Number()
        frames, per, per_latent = cfg.data.frames, cfg.dense.segment_frames, frames_per_latent(cfg.model)
        count = default_count(frames, per, per_latent)
        if count is None:
            return gr.Number(0, label=f"Segments per pair ({count_choices(frames, per_latent)} for the run's {frames} frames)")
        return gr.Number(count, label=f"Segments per pair (the run's: {split_frames(frames, per_latent)} frames / {per} = {count})")

    def segments(self, category: str | None, key: str | None) -> list[Segment]:
        """The picked pair's segments, or [] when there is none (the label list is then empty)."""
        try:
            root = self._root(category)
            pair = self._pair(root, key)
            return pair_segments(pair, *self._window(root, pair))
        except HuviError:
            return []

    def view(self, category: str | None, key: str | None):
        """(preview video, timeline, note) of the picked pair."""
        if not category or not key:
            return None, "", "No pair picked. Make aligned pairs above, or add pairs to category.json by hand."
        try:
            root = self._root(category)
            pair = self._pair(root, key)
            data, per_latent = window = self._window(root, pair)
            video = pair_preview(root, pair, data, per_latent=per_latent)
        except HuviError as err:
            return None, "", f"✖ {err}"
        return str(video), self._timeline(root, pair, window), pair_note(pair, data)

    def _timeline(self, root: Path, pair: ExplicitPair, window: tuple[DataConfig, int] | None = None) -> str:
        segments = pair_segments(pair, *(window or self._window(root, pair)))
        return timeline_html(segments, clip_fps(root / "clips" / pair.a))

    # labelling ---------------------------------------------------------------------------------
    @user_errors
    def set_label(self, category: str, key: str, index: int, label: str | None):
        root = self._root(category)
        pair = self._pair(root, key)
        return self._timeline(root, label_segment(root, pair.a, pair.b, index, label))

    @user_errors
    def api_label(self, category: str, a: str, b: str, segment: int, label: str) -> dict:
        """Label segment `segment` (from 1) of pair (a, b) "a", "b" or "tie" ("" clears it; a pair
        labelled per clip has one segment); returns the pair as category.json now holds it."""
        return label_segment(self._root(category), a, b, int(segment) - 1, label or None).to_json()

    @user_errors
    def set_all(self, category: str, key: str, label: str | None, version: int):
        """Give every segment of the pair `label` (None clears them); bumps `version` to redraw."""
        root = self._root(category)
        pair = self._pair(root, key)
        if pair.segments is not None:
            pair = label_pair(root, pair.a, pair.b, segments=[label] * len(pair.segments), winner=pair.winner)
        else:
            pair = label_pair(root, pair.a, pair.b, winner=label)
        return self._timeline(root, pair), version + 1

    @user_errors
    def remove(self, category: str, key: str, confirmed: str):
        if confirmed != key:  # the user cancelled the browser's confirmation
            return gr.skip(), gr.skip()
        root = self._root(category)
        pair = self._pair(root, key)
        remove_pair(root, pair.a, pair.b)
        remove_previews(root, pair)
        gr.Info(f"Removed the pair {pair.name}; its clips stay in the category.")
        return self.pair_dropdown(category, keep=False), None

    def _make(self, category: str, run: str, clips: list[str] | None, eta: float, seed, segments, report=None) -> list[ExplicitPair]:
        root = self._root(category)
        if not run:
            raise HuviError("Pick a trained run first: its model denoises the clips (train at least its motion stage).")
        run_dir = self.ws.run_dir(run)
        with self.jobs.hold(f"making aligned pairs with {run_dir.name}"):
            return _aligned_pairs_on_gpu(self.jobs.models, run_dir, root, list(clips or []), float(eta), int(seed or 0), int(segments or 0) or None, report)

    @user_errors
    def make_pairs(self, category: str, run: str, clips: list[str] | None, eta: float, seed, segments, progress=gr.Progress()):  # noqa: B008 (how Gradio hands a handler its progress bar)
        """Make aligned pairs (see huvi.dense) and pick the first new one in the pair list."""
        progress(0, desc="loading the model")

        def report(done: int, total: int) -> None:
            progress((done, total), desc="denoising", unit="clips")

        made = self._make(category, run, clips, eta, seed, segments, report)
        gr.Info(f"Made {len(made)} aligned pair{'s' if len(made) != 1 else ''}; label {'them' if len(made) != 1 else 'it'} below.")
        return self.pair_dropdown(category, pair_key(made[0]) if made else None, keep=False)

    @user_errors
    def api_make_pairs(self, category: str, run: str, clips: list[str], eta: float = 0.75, seed: int = 0, segments: int = 0) -> list[dict]:
        """Make one aligned pair per clip in `clips` ([]: every rated clip) with the run's model,
        noised to `eta`; `segments` 0 takes the preset's count. Returns the new pairs, unlabelled."""
        return [pair.to_json() for pair in self._make(category, run, clips, eta, seed, segments)]


def pair_note(pair: ExplicitPair, data: DataConfig) -> str:
    lines = [f"**Left: first** `{pair.a}` · **right: second** `{pair.b}`."]
    if pair.segments is not None:
        lines.append(
            f"{len(pair.segments)} segments over the {data.frames} training frames (the file's first {data.frames * data.stride} "
            f"frames at stride {data.stride}); "
            "the lit block below the video is the segment playing. Frame 0 is the shared first frame and counts in no segment."
        )
    else:
        lines.append("Labelled as a whole clip: one choice for the pair.")
    if pair.aligned:
        source, eta = pair.aligned.get("source"), pair.aligned.get("eta")
        lines.append(f"Made from `{source}` at eta {eta}: same motion and layout, different details.")
    return " ".join(lines)


def timeline_html(segments: list[Segment], fps: float) -> str:
    """The pair's segments as coloured blocks, each with its number, frames, seconds and label."""
    end = max((s.end for s in segments), default=1)
    blocks = []
    for s in segments:
        t0, t1 = s.seconds(fps)
        color = LABEL_COLORS[s.label]
        text = "#fff" if s.label else "inherit"
        border = "1px dashed var(--border-color-primary)" if s.label is None else "none"
        blocks.append(
            f'<div class="huvi-seg" style="flex:{s.end - s.start};background:{color};color:{text};border:{border}" '
            f'title="frames {s.start}–{s.end - 1} · {t0:.2f}–{t1:.2f} s">'
            f"<b>{s.index + 1}</b> · {LABEL_TEXT[s.label]}<br><small>{t0:.1f}–{t1:.1f} s</small></div>"
        )
    labelled = sum(s.label is not None for s in segments)
    head = f"<p class='huvi-seg-count'>{labelled} of {len(segments)} segments labelled · the clip's first {end} frames</p>"
    return head + f'<div class="huvi-timeline">{"".join(blocks)}</div>'
