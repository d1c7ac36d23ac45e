"""Event handlers: widget values in, a typed request to the library, widget values out.

No layout here (that is `ui.app`) and no training math (that is `huvi`). A HuviError a user can
cause is shown as a `gr.Error` toast with its one sentence; anything else is a bug and keeps its
traceback in the server log. State that must survive a reload lives on disk: category folders,
run folders and their job.json.
"""

from __future__ import annotations

import functools
import html
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from huvi.category import ADVISED_CLIPS, MIN_CLIPS, check_category
from huvi.config import load_config, preset_names
from huvi.errors import HuviError
from huvi.jobs import Jobs, JobStatus, TrainRequest, display_command, read_job, resume_argv, train_argv
from huvi.pairs import split_pairs
from huvi.runs import STAGES, Run
from huvi.workspace import (
    ClipEntry,
    PairsView,
    PresetChoice,
    Workspace,
    add_clip,
    list_clips,
    preference_pairs,
    preset_note,
    read_meta,
    remove_clip,
    set_prompt,
    set_score,
    summarize,
)

logger = logging.getLogger(__name__)

SMOOTH = 20  # steps in the running means drawn beside the raw per-step values
# Raw per-step values light, their running mean dark in the same hue.
SERIES_COLORS = {
    "motion loss": "#c7d2fe", f"motion loss (mean of {SMOOTH})": "#4338ca",
    "DPO loss": "#fecaca", f"DPO loss (mean of {SMOOTH})": "#b91c1c",
    f"training pairs (mean of {SMOOTH})": "#4338ca", "held-out pairs": "#059669",
    "reward margin": "#fde68a", f"reward margin (mean of {SMOOTH})": "#b45309",
    "winner": "#059669", "loser": "#b91c1c", "winner, reference": "#6ee7b7", "loser, reference": "#fca5a5",
}
STATE_ICONS = {"none": "○", "starting": "◌", "running": "●", "finished": "✔", "stopped": "■", "failed": "✖", "interrupted": "⚠"}

# Train-tab settings: (config key, label). Only values that differ from the preset become `--set`.
TRAIN_SETTINGS = (
    ("motion.steps", "Motion steps"),
    ("dpo.steps", "DPO steps"),
    ("seed", "Seed (also decides the pair order)"),
    ("generate.preview_every", "Preview clip every N steps (0: none)"),
    ("dpo.beta", "DPO beta (5000 for SD1.5)"),
    ("motion.learning_rate", "Motion learning rate"),
    ("dpo.learning_rate", "DPO learning rate"),
    ("data.holdout", "Held-out share of pairs"),
    ("motion.adapter.rank", "Motion LoRA rank"),
    ("dpo.adapter.rank", "DPO LoRA rank"),
)
SETTING = {key: i for i, (key, _) in enumerate(TRAIN_SETTINGS)}  # config key -> its place in TRAIN_SETTINGS
STAGE_CHOICES = [("motion, then DPO", "both"), ("motion only", "motion")]  # a new run has no motion adapter to run DPO on
MODE_CHOICES = [("clip ratings (Rate tab)", "clip"), ("segment labels (DenseDPO tab)", "dense")]  # dpo.mode


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


@gpu_task
def _generate_on_gpu(models, run_dir: Path, request, out: Path, progress):
    return models.get(run_dir).generate(request, out, progress=progress, show_progress=False)


def _config_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


@dataclass
class Handlers:
    ws: Workspace
    jobs: Jobs
    preset: PresetChoice  # the default preset for this machine

    # banner ------------------------------------------------------------------------------------
    def banner(self) -> str:
        if self.preset.name != "tiny":
            return f"**Preset `{self.preset.name}`** — {self.preset.reason}"
        return (
            f"**Tiny preset** — {self.preset.reason} huvi uses small random-weight models built in code: they run the "
            "whole flow (rate clips, train both stages, generate, export) on a CPU in minutes and learn toy "
            "preferences such as the demo's sliding squares, but they do not make real video. For the real "
            "model (Stable Diffusion 1.5 + AnimateDiff, a GPU with 12 GB or more), download the weights once "
            "and restart the app:\n\n"
            "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5` and "
            "`hf download guoyww/animatediff-motion-adapter-v1-5-2`"
        )

    # categories --------------------------------------------------------------------------------
    def categories(self) -> list[str]:
        return self.ws.list_categories()

    def default_category(self) -> str | None:
        names = self.categories()
        return names[0] if names else None

    def category_dropdown(self, value: str | None = None):
        names = self.categories()
        return gr.Dropdown(choices=names, value=value if value in names else (names[0] if names else None))

    def _category(self, name: str | None) -> Path:
        return self.ws.existing_category(name)

    def summary(self, name: str | None) -> str:
        if not name:
            return "No category yet: create one above."
        try:
            s = summarize(self._category(name))
        except HuviError as err:
            return f"✖ {err}"
        ratings = " · ".join(f"{score}★ ×{n}" for score, n in s.histogram.items() if n) or "none yet"
        lines = [f"**{s.clips} clip{'s' if s.clips != 1 else ''}**, {s.rated} rated ({ratings}) → **{s.pairs} preference pairs**"]
        errors = [p.message for p in s.problems if p.level == "error"]
        warnings = [p.message for p in s.problems if p.level == "warning"]
        lines.append("✔ Ready to train." if not errors else "✖ Not ready to train:")
        items = [f"- {m}" for m in errors] + [f"- ⚠ {m}" for m in warnings]
        return "\n\n".join(lines) + ("\n\n" + "\n".join(items) if items else "")

    def clip_summary(self, name: str | None) -> str:
        """The Category tab's line: how many clips, and what to do about the count."""
        if not name:
            return "No category yet: create one above."
        try:
            count = len(list_clips(self._category(name)))
        except HuviError as err:
            return f"✖ {err}"
        low, high = ADVISED_CLIPS
        head = f"**{count} clip{'s' if count != 1 else ''}** in `{name}`."
        if count == 0:
            advice = f"No clips yet: drop {low}–{high} clips of one action in the box above."
        elif count < low:
            advice = (
                f"⚠ Add {low - count} more: the method is tuned for {low}–{high} clips of one action; fewer clips give few "
                f"preference pairs (training needs at least {MIN_CLIPS} rated clips)."
            )
        elif count > high:
            advice = (
                f"⚠ More than the {low}–{high} clips the method is tuned for: every clip still trains, but rating takes "
                "longer and near-duplicates add little; consider removing some."
            )
        else:
            advice = f"✔ Within the {low}–{high} clips the method is tuned for. Next: rate them in the **Rate** tab."
        return f"{head} {advice}"

    def category_view(self, name: str | None) -> tuple[str, str, str]:
        """(prompt, clip summary, rating summary) of the picked category."""
        if not name:
            return "", self.clip_summary(None), self.summary(None)
        try:
            prompt = read_meta(self._category(name)).get("prompt", "")
        except HuviError as err:
            return "", f"✖ {err}", f"✖ {err}"
        return prompt, self.clip_summary(name), self.summary(name)

    @user_errors
    def create_category(self, name: str, prompt: str):
        root = self.ws.create_category(name, prompt)
        gr.Info(f"Created {root.name}; now add 8-16 clips and rate them.")
        return self.category_dropdown(root.name), self.category_dropdown(root.name), "", ""

    @user_errors
    def save_prompt(self, name: str, prompt: str) -> str:
        set_prompt(self._category(name), prompt)
        gr.Info("Prompt saved.")
        return self.clip_summary(name)

    def clips(self, name: str | None) -> list[ClipEntry]:
        if not name:
            return []
        try:
            return list_clips(self._category(name))
        except HuviError:
            return []

    @staticmethod
    def clip_caption(entry: ClipEntry) -> str:
        """Frame count and size as stored (and whether a pair uses it), or why the clip does not decode."""
        try:
            info = str(entry.info)
        except HuviError as err:
            return f"✖ {err}"
        return f"{info} · in a pair (DenseDPO tab)" if entry.paired else info

    @user_errors
    def add_clips(self, name: str, files: list[str] | None, preset: str):
        """Decode and copy each upload in; returns (clip summary, cleared upload box, report).

        A file that is refused is named in the report with its reason; the others are kept."""
        root = self._category(name)
        if not files:
            raise HuviError("Choose or drop one or more clips to upload first.")
        read_meta(root)  # a category.json broken by hand is one sentence, not one per file
        data = load_config(preset or self.preset.name).data
        added, refused = [], []
        for file in files:
            path = Path(file)  # Gradio keeps the uploaded file's own name
            try:
                added.append(add_clip(root, path, None, data, filename=path.name))
            except HuviError as err:
                message = str(err)
                refused.append(message if message.startswith(path.name) else f"{path.name}: {message}")
        lines = []
        if added:
            lines.append(f"✔ Added {len(added)} clip{'s' if len(added) > 1 else ''}: {', '.join(f'`{n}`' for n in added)}. Rate them in the **Rate** tab.")
            gr.Info(f"Added {len(added)} clip{'s' if len(added) > 1 else ''}.")
        if refused:
            kept = " (the others were kept)" if added else ""
            lines.append(f"✖ Refused {len(refused)} file{'s' if len(refused) > 1 else ''}{kept}:\n" + "\n".join(f"- {m}" for m in refused))
            for message in refused:
                gr.Warning(message, duration=10)  # the report below the upload box keeps it
        return self.clip_summary(name), None, "\n\n".join(lines)

    @user_errors
    def set_score(self, name: str, clip: str, score: int | None) -> str:
        set_score(self._category(name), clip, score)
        return self.summary(name)

    @user_errors
    def remove_clip(self, name: str, clip: str, version: int):
        if version < 0:  # the user cancelled the confirmation
            return gr.skip(), gr.skip()
        remove_clip(self._category(name), clip)
        gr.Info(f"Removed {clip}.")
        return self.clip_summary(name), version + 1

    # API twins of the per-clip controls, with the types gr.api reads
    def api_list_clips(self, category: str) -> list[dict]:
        """Clips of a category: name, rating (None: unrated), frames, width and height (None with an
        "error" when the clip does not decode)."""
        out = []
        for entry in self.clips(category):
            try:
                info = entry.info
                facts = {"frames": info.frames, "width": info.width, "height": info.height}
            except HuviError as err:
                facts = {"frames": None, "width": None, "height": None, "error": str(err)}
            out.append({"name": entry.name, "score": entry.score} | facts)
        return out

    def api_set_score(self, category: str, clip: str, score: int) -> str:
        """Rate a clip 1-5 (0 clears the rating); returns the category summary."""
        return self.set_score(category, clip, score or None)

    def api_remove_clip(self, category: str, clip: str) -> str:
        """Delete a clip and its rating; returns the Category tab's clip summary."""
        return self.remove_clip(category, clip, 0)[0]

    # pairs -------------------------------------------------------------------------------------
    @staticmethod
    def new_seed() -> int:
        return random.randrange(10_000)

    def pairs_view(self, name: str | None, seed, holdout) -> tuple[str, pd.DataFrame, str]:
        """(headline, table, who is left out) of the pairs a run with `seed` trains on."""
        empty = pd.DataFrame(columns=PAIR_COLUMNS)
        if not name:
            return "No category yet: create one in the **Category** tab.", empty, ""
        try:
            view = preference_pairs(self._category(name), int(seed or 0))
        except HuviError as err:
            return f"✖ {err}", empty, ""
        try:
            held = len(split_pairs(view.pairs, float(holdout or 0))[1])  # as the trainer splits them
        except (TypeError, ValueError):
            held = 0
        rows = [
            (i, p.winner, _stars(p.winner_score), p.loser, _stars(p.loser_score), "held out" if i <= held else "training")
            for i, p in enumerate(view.pairs, start=1)
        ]
        n = len(view.pairs)
        head = f"**{n} preference pair{'s' if n != 1 else ''}** in `{name}`"
        if n:
            split = f"the first {held} held out to score accuracy, {n - held} for training" if held else "all used for training"
            head += f", in the order a run with seed **{view.seed}** trains on them ({split})."
        else:
            head += ": rate at least two clips differently in the **Rate** tab to form one."
        return head, pd.DataFrame(rows, columns=PAIR_COLUMNS), left_out_markdown(view)

    @user_errors
    def api_pairs(self, category: str, seed: int) -> dict:
        """The preference pairs of `category` in the order a run with `seed` trains on them, and the
        clips left out: unrated, tied (rating -> clips), unpaired."""
        view = preference_pairs(self._category(category), int(seed))
        return {
            "seed": view.seed,
            "count": len(view.pairs),
            "pairs": [{"winner": p.winner, "loser": p.loser, "winner_score": p.winner_score, "loser_score": p.loser_score} for p in view.pairs],
            "unrated": view.unrated,
            "ties": {str(score): names for score, names in view.ties.items()},
            "tied_combinations": view.tied_combinations,
            "unpaired": view.unpaired,
        }

    @user_errors
    def check_clips(self, name: str, preset: str) -> str:
        root = self._category(name)
        cfg = load_config(preset or self.preset.name)
        problems = check_category(root, cfg.data)
        errors = [p.message for p in problems if p.level == "error"]
        head = (
            f"✔ Every clip decodes and is long enough for preset `{cfg.preset}` ({cfg.data.frames} frames at stride {cfg.data.stride})."
            if not errors
            else f"✖ {len(errors)} problem{'s' if len(errors) > 1 else ''} to fix before training with preset `{cfg.preset}`:"
        )
        return "\n".join([head] + [f"- {'⚠ ' if p.level == 'warning' else ''}{p.message}" for p in problems])

    # train: settings and the command -------------------------------------------------------------
    def presets(self) -> list[str]:
        return preset_names()

    def preset_values(self, preset: str) -> list:
        """The Train tab's setting fields filled from `preset`."""
        try:
            cfg = load_config(preset or self.preset.name)
        except HuviError:
            return [gr.skip()] * len(TRAIN_SETTINGS)
        return [_config_value(cfg, key) for key, _ in TRAIN_SETTINGS]

    def preset_info(self, preset: str | None) -> str:
        """What a preset is for (its YAML's leading comment), and whether it is this machine's default."""
        preset = preset or self.preset.name
        note = preset_note(preset) or "No description."
        default = " This machine's default." if preset == self.preset.name else ""
        return f"**{preset}** — {note}{default}"

    def new_run_name(self, category: str | None) -> str:
        try:
            return self.ws.new_run_name(category or "run")
        except HuviError:
            return self.ws.new_run_name("run")

    def _request(self, category: str, run_name: str, preset: str, stage: str, mode: str, values: list, extra: str) -> TrainRequest:
        preset = preset or self.preset.name
        base = load_config(preset)
        overrides = []
        for (key, label), value in zip(TRAIN_SETTINGS, values):
            if value is None or value == "":
                raise HuviError(f"{label} is empty; give it a value.")
            if not _same(value, _config_value(base, key)):
                value = int(value) if isinstance(value, float) and value.is_integer() and isinstance(_config_value(base, key), int) else value
                overrides.append(f"{key}={value}")
        for line in (extra or "").splitlines():
            line = line.strip().removeprefix("--set").strip()
            if line and not line.startswith("#"):
                overrides.append(line)
        stages = STAGES if stage in (None, "", "both") else (stage,)
        return TrainRequest(self._category(category), self.ws.run_dir(run_name), preset, tuple(overrides), stages, mode or "clip")

    def command(self, category, run_name, preset, stage, mode, *rest) -> str:
        """The CLI line that trains with these settings (or why there is none yet)."""
        *values, extra = rest
        try:
            request = self._request(category, run_name, preset, stage, mode, values, extra)
            load_config(request.preset, list(request.overrides))
        except HuviError as err:
            return f"# {err}"
        return display_command(train_argv(request))

    @user_errors
    def start(self, category, run_name, preset, stage, mode, *rest):
        *values, extra = rest
        request = self._request(category, run_name, preset, stage, mode, values, extra)
        status = self.jobs.start(request)
        gr.Info(f"Started {status.run.name}. Training runs in the background: you may close this page and come back.")
        return self.run_dropdown(status.run.name), self.new_run_name(category)

    @user_errors
    def stop(self, run_name: str) -> None:
        self.jobs.stop(self.ws.run_dir(self._run_name(run_name)))
        gr.Info("Stopping after the current step; a checkpoint will be written.")

    @user_errors
    def resume(self, run_name: str) -> None:
        self.jobs.resume(self.ws.run_dir(self._run_name(run_name)))
        gr.Info(f"Resumed {run_name}.")

    @staticmethod
    def _run_name(run_name: str | None) -> str:
        if not run_name:
            raise HuviError("Pick a run first.")
        return run_name

    # train: watching a run ---------------------------------------------------------------------
    def runs(self) -> list[str]:
        return self.ws.list_runs()

    def watched_run(self) -> str | None:
        """The run to show on load: the one training now, else the newest."""
        active = self.jobs.active()
        if active is not None and active.parent.resolve() == self.ws.runs.resolve():
            return active.name
        runs = self.runs()
        return runs[0] if runs else None

    def run_dropdown_watched(self):
        return self.run_dropdown(self.watched_run())

    def run_dropdown(self, value: str | None = None):
        runs = self.runs()
        return gr.Dropdown(choices=runs, value=value if value in runs else (runs[0] if runs else None))

    def status(self, run_name: str | None) -> JobStatus | None:
        if not run_name:
            return None
        try:
            return self.jobs.status(self.ws.run_dir(run_name))
        except HuviError:
            return None

    def status_markdown(self, status: JobStatus | None) -> str:
        if status is None:
            return "No run picked. Start one above, or pick a run to watch."
        lines = [f"### {STATE_ICONS.get(status.state, '')} {status.state} — `{status.run.name}`", status.message]
        if status.command:
            lines.append(f"Started with: `{status.command}`")
        if status.can_resume:
            category = (read_job(status.run) or {}).get("category") or Run(status.run).read_info().get("category")
            if category:
                lines.append(f"Resume from a shell: `{display_command(resume_argv(Path(category), status.run))}`")
        return "\n\n".join(lines)

    @staticmethod
    def progress_html(status: JobStatus | None) -> str:
        if status is None or not status.progress.total:
            return ""
        p = status.progress
        eta = f" · about {_duration(p.eta_seconds)} left" if status.active and p.eta_seconds else ""
        rate = f" · {p.seconds_per_step:.2f} s/step" if p.seconds_per_step else ""
        return (
            f'<div class="huvi-progress" role="progressbar" aria-valuenow="{p.done}" aria-valuemax="{p.total}">'
            f'<div class="huvi-progress-fill" style="width:{100 * p.fraction:.1f}%"></div></div>'
            f'<div class="huvi-progress-text">{html.escape(f"{p.done} / {p.total} steps ({100 * p.fraction:.0f}%){rate}{eta}")}</div>'
        )

    def poll(self, run_name: str | None, seen: dict | None):
        """Everything the Train tab shows about `run_name`; unchanged plots and videos are skipped."""
        seen = dict(seen or {})
        status = self.status(run_name)
        if seen.get("run") != run_name:
            seen = {"run": run_name}
        out = {"status": self.status_markdown(status), "progress": self.progress_html(status)}
        out["stop"] = gr.Button(interactive=bool(status and status.can_stop))
        out["resume"] = gr.Button(interactive=bool(status and status.can_resume))
        run = Run(status.run) if status else None
        rows = run.read_metrics() if run else []
        if seen.get("rows") != len(rows):
            seen["rows"] = len(rows)
            stages = status.progress.stages if status else STAGES
            frames = metric_frames(rows, stages, held_out=_holds_out(status.run) if status else False)
            out |= {key: gr.LinePlot(value=frame, visible=not frame.empty) for key, frame in frames.items()}
            out["health_box"] = gr.Accordion(visible=not frames["health"].empty)
        else:
            out |= {k: gr.skip() for k in ("loss", "accuracy", "margin", "health", "health_box")}
        preview = newest_preview(status.run) if status else None
        if seen.get("preview", "") != str(preview or ""):
            seen["preview"] = str(preview or "")
            out["preview"] = gr.Video(value=str(preview) if preview else None, label=_preview_label(preview), visible=preview is not None)
        else:
            out["preview"] = gr.skip()
        log = log_tail(status.run) if status else ""
        out["log"] = log if seen.get("log") != log else gr.skip()
        seen["log"] = log
        return out, seen

    def job_status(self, run_name: str) -> dict:
        """API: the state of a run as plain JSON."""
        status = self.status(run_name)
        if status is None:
            return {"state": "none", "message": f"No run named {run_name!r}."}
        p = status.progress
        return {
            "run": status.run.name, "state": status.state, "message": status.message, "stage": p.stage, "step": p.step,
            "done": p.done, "total": p.total, "eta_seconds": p.eta_seconds, "command": status.command,
        }

    # generate ----------------------------------------------------------------------------------
    def gpu_note(self) -> str:
        """A warning while another job holds the GPU ("" when it is free)."""
        holder = self.jobs.holder()
        if holder is None:
            return ""
        return (
            f"⚠ **The GPU is busy ({holder}).** One GPU job runs at a time, so Generate is refused until it ends: "
            "wait for it, or stop it in the **Train** tab."
        )

    def trained_runs(self) -> list[str]:
        return [name for name in self.runs() if any(Run(self.ws.runs / name).adapter_path(s).is_file() for s in STAGES)]

    def trained_run_dropdown(self, value: str | None = None):
        runs = self.trained_runs()
        return gr.Dropdown(choices=runs, value=value if value in runs else (runs[0] if runs else None))

    def run_prompt(self, run_name: str | None) -> str:
        """The prompt the run was trained with: from RUN/run.json, else from its category."""
        if not run_name:
            return ""
        run_dir = self.ws.runs / run_name
        prompt = Run(run_dir).read_info().get("prompt")
        if isinstance(prompt, str) and prompt:
            return prompt
        job = read_job(run_dir) or {}
        try:
            return read_meta(Path(job["category"])).get("prompt", "") if job.get("category") else ""
        except HuviError:
            return ""

    @user_errors
    def generate(self, run_name, prompt, first_frame, seed, steps, guidance, dpo_scale, motion_scale, compare, progress=gr.Progress()):  # noqa: B008 (how Gradio hands a handler its progress bar)
        from huvi.generate import GenerateRequest  # here: the app starts without loading diffusers' pipelines
        run_dir = self.ws.run_dir(self._run_name(run_name))
        request = GenerateRequest(
            prompt=(prompt or "").strip(),
            first_frame=Path(first_frame) if first_frame else None,
            seed=int(seed or 0),
            steps=int(steps) if steps else None,
            guidance=float(guidance) if guidance else None,
            dpo_scale=float(dpo_scale),
            motion_scale=float(motion_scale),
            compare=bool(compare),
        )
        out = run_dir / "samples" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{request.seed}.mp4"
        progress(0, desc="loading the model")

        def report(step: int, total: int) -> None:
            progress((step, total), desc="denoising", unit="steps")

        with self.jobs.hold(f"generating a video with {run_dir.name}"):
            result = _generate_on_gpu(self.jobs.models, run_dir, request, out, report)
        compare_path = getattr(result, "compare", None)
        return (
            str(result.video),
            gr.Video(value=str(compare_path) if compare_path else None, visible=compare_path is not None),
            str(result.first_frame),
            f"Saved to `{result.video}`.",
        )

    # export ------------------------------------------------------------------------------------
    @user_errors
    def export(self, run_name: str, fmt: str, merge: bool):
        from huvi.export import export_run
        run_dir = self.ws.run_dir(self._run_name(run_name))
        kind = f"{fmt}-merged" if merge else fmt
        folder = run_dir / "export" / kind
        if folder.exists():
            shutil.rmtree(folder)  # derived files: a new export replaces the previous one of the same kind
        result = export_run(run_dir, fmt, folder / f"{run_dir.name}-{kind}.safetensors", merge=bool(merge))
        card = result.card.read_text(encoding="utf-8") if result.card and Path(result.card).is_file() else ""
        return [str(f) for f in result.files], _without_front_matter(card), dict(result.metadata)


# plain helpers -----------------------------------------------------------------------------------
PAIR_COLUMNS = ["#", "winner", "winner's rating", "loser", "loser's rating", "used for"]


def _stars(score: int | None) -> str:
    return f"{score}★" if score else "unrated"


def left_out_markdown(view: PairsView) -> str:
    """Why clips or clip combinations are not in the pairs: no rating, or the same rating."""
    parts = []
    if view.unrated:
        parts.append(f"**Unrated, so in no pair** (rate them in the **Rate** tab): {_names(view.unrated)}.")
    if view.ties:
        groups = "\n".join(f"- {score}★: {_names(names)}" for score, names in view.ties.items())
        parts.append(
            f"**Equal ratings never pair** — a tie says nothing about which clip is better, so these "
            f"{view.tied_combinations} combination{'s are' if view.tied_combinations != 1 else ' is'} left out:\n{groups}"
        )
    if view.unpaired:
        parts.append(f"**In no pair at all** (every other rated clip has the same rating): {_names(view.unpaired)}.")
    if not parts:
        return "Every clip is in at least one pair, and no two clips share a rating."
    return "\n\n".join(parts)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _without_front_matter(markdown: str) -> str:
    """A model card without its leading `---` YAML block (the Hub reads it; a reader needs the rest)."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---", 4)
        if end != -1:
            return markdown[end + 4 :].lstrip("\n")
    return markdown


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _series(rows: list[dict], key: str, label: str, raw: bool = True, smooth: bool = True) -> dict[str, pd.DataFrame]:
    """`key` of `rows` as {series name: (step, value) frame}: the raw values and/or their running mean."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    frame = pd.DataFrame(points, columns=["step", "value"])
    out = {label: frame} if raw else {}
    if smooth:
        out[f"{label} (mean of {SMOOTH})" if raw else label] = frame.assign(value=frame["value"].rolling(SMOOTH, min_periods=1).mean())
    return out


def _plot_frame(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long (step, value, series) frame; empty when no series has a point.

    A series without points yet gets one empty (NaN) row: the browser's plot fixes its colours
    when first drawn with data, so a series that appears later (the DPO stage, the first held-out
    score) would stay invisible until a reload."""
    steps = [f["step"].min() for f in parts.values() if not f.empty]
    if not steps:
        return pd.DataFrame({"step": [], "value": [], "series": []})
    filled = [f if not f.empty else pd.DataFrame({"step": [min(steps)], "value": [float("nan")]}) for f in parts.values()]
    return pd.concat([f.assign(series=name) for name, f in zip(parts, filled)], ignore_index=True)


def metric_frames(rows: list[dict], stages: tuple[str, ...] = STAGES, held_out: bool = False) -> dict[str, pd.DataFrame]:
    """Long-format frames (step, value, series) for the Train tab's four plots.

    `stages` and `held_out` name the series the run will log, so that each plot knows all of its
    series from its first point."""
    motion = [r for r in rows if r.get("stage") == "motion"]
    dpo = [r for r in rows if r.get("stage") == "dpo"]
    loss = (_series(motion, "loss", "motion loss") if "motion" in stages else {}) | (_series(dpo, "loss", "DPO loss") if "dpo" in stages else {})
    accuracy = _series(dpo, "accuracy", f"training pairs (mean of {SMOOTH})", raw=False)
    if held_out:
        accuracy |= _series(dpo, "val_accuracy", "held-out pairs", smooth=False)
    health = (("loss_w", "winner"), ("loss_l", "loser"), ("ref_loss_w", "winner, reference"), ("ref_loss_l", "loser, reference"))
    return {
        "loss": _plot_frame(loss),
        "accuracy": _plot_frame(accuracy),
        "margin": _plot_frame(_series(dpo, "reward_margin", "reward margin")),
        # running means only: four raw series would hide each other
        "health": _plot_frame({label: f for key, name in health for label, f in _series(dpo, key, name, raw=False).items()}),
    }


def _holds_out(run_dir: Path) -> bool:
    """Whether the run scores held-out pairs (data.holdout > 0)."""
    try:
        return Run(run_dir).read_config().data.holdout > 0
    except HuviError:
        return False


def newest_preview(run_dir: Path) -> Path | None:
    """The newest RUN/previews/{stage}-{step:06d}.mp4, stage order then step."""
    folder = Path(run_dir) / "previews"
    if not folder.is_dir():
        return None
    clips = [p for p in folder.glob("*.mp4") if p.stem.partition("-")[0] in STAGES]
    return max(clips, key=lambda p: (STAGES.index(p.stem.partition("-")[0]), p.stem), default=None)


def _preview_label(path: Path | None) -> str:
    if path is None:
        return "Preview (written every preview_every steps when set)"
    stage, _, step = path.stem.partition("-")
    return f"Preview: {stage} step {int(step) if step.isdigit() else step} (fixed seed)"


def log_tail(run_dir: Path, lines: int = 40) -> str:
    """The end of the job's output (job.log), or of train.log for a run started outside the app.

    A progress bar rewrites its line with carriage returns; only its latest state is kept."""
    for name in ("job.log", "train.log"):
        path = Path(run_dir) / name
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")  # keeps the carriage returns
            kept = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
            return "\n".join([line for line in kept if line.strip()][-lines:])
    return ""
