"""Handlers of the Train tab: the settings form and its `python -m huvi train` line, Start / Stop /
Resume of a background job (huvi.jobs), and everything shown about the run being watched: state,
progress with elapsed and finish times, plots, preview clips and the log.

The form follows the run shown below it: on page load and when a run is picked, its fields are
filled from that run (huvi.train_command.run_request), so a reloaded page shows the settings that are
training. Start makes a new run under a new name.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from huvi.catalogue import cpu_config, cpu_preset, family_title, missing_weights, preset_entry, preset_note
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.gpu_lock import busy_subject
from huvi.health import summary
from huvi.job_log import log_tail
from huvi.jobs import JobStatus, read_job
from huvi.precision import cpu_load, free_cores
from huvi.previews import list_previews
from huvi.runs import STAGES, Run
from huvi.train_command import TrainRequest, display_command, resume_argv, run_request, train_argv
from ui.common import Context, clock, duration, escape, plural, user_errors
from ui.picker import preset_dropdown
from ui.plots import PLOTS, metric_plots

STATE_ICONS = {"none": "○", "starting": "◌", "running": "●", "finished": "✔", "stopped": "■", "failed": "✖", "interrupted": "⚠"}
STATE_TITLES = {"finished": "done"}

# Train-tab settings: (config key, label). Only values that differ from the preset become `--set`.
TRAIN_SETTINGS = (
    ("motion.steps", "Motion steps"),
    ("dpo.steps", "DPO steps"),
    ("seed", "Seed (also decides the pair order)"),
    ("generate.preview_every", "Preview clip every N steps (0: none)"),
    ("dpo.beta", "DPO beta (the family's scale: 5000 for SD1.5, 2500 for Wan; the field shows the preset's)"),
    ("motion.learning_rate", "Motion learning rate"),
    ("dpo.learning_rate", "DPO learning rate"),
    ("data.holdout", "Held-out share of pairs"),
    ("motion.adapter.rank", "Motion LoRA rank"),
    ("dpo.adapter.rank", "DPO LoRA rank"),
    ("data.min_rating_gap", "Pair ratings at least this far apart (1: any two different)"),
)
SETTING = {key: i for i, (key, _) in enumerate(TRAIN_SETTINGS)}  # config key -> its place in TRAIN_SETTINGS
PROMPTS_KEY = "generate.preview_prompts"
STAGE_CHOICES = [("motion, then DPO", "both"), ("motion only", "motion")]  # a new run has no motion adapter to run DPO on
MODE_CHOICES = [("clip ratings (Rate tab)", "clip"), ("segment labels (DenseDPO tab)", "dense")]  # dpo.mode
# What `poll` returns, in the order the layout lists its components.
SHOWN = ("status", "progress", "start", "busy", "stop", "resume", *PLOTS, "health_box", "previews", "log")


def config_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def preview_prompts(text: str | None) -> list[str]:
    """The Train tab's preview prompts box: one prompt per non-empty line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class TrainHandlers(Context):
    # the form ----------------------------------------------------------------------------------
    def preset_values(self, preset: str) -> list:
        """The Train tab's setting fields filled from `preset`."""
        try:
            cfg = load_config(preset or self.preset.name)
        except HuviError:
            return [gr.skip()] * len(TRAIN_SETTINGS)
        return [config_value(cfg, key) for key, _ in TRAIN_SETTINGS]

    def preset_info(self, preset: str | None) -> str:
        """What a preset is for (its YAML's leading comment), its VRAM tier and what it gives up, whether it is
        this machine's default, and what this machine makes of it: no GPU or no weights for a GPU preset, cores
        other work keeps busy."""
        import torch

        preset = preset or self.preset.name
        note = preset_note(preset) or "No description."
        default = " This machine's default." if preset == self.preset.name else ""
        lines = [f"**{preset}** — {note}{default}"]
        entry = preset_entry(preset)
        if entry is not None:
            against = f"against `{entry.reference}`, it " if entry.gives_up else ""
            lines.append(f"{family_title(entry.family)} · VRAM tier **{entry.tier}** · {against}{entry.summary}.")
        try:
            cfg = load_config(preset)
        except HuviError:
            cfg = None
        model = cfg.model if cfg else None
        cpu = cpu_preset(model.family) if model else None
        if cfg is not None and not cpu_config(cfg) and not torch.cuda.is_available():
            lines.append(
                f"⚠ **This machine has no CUDA GPU**: `{preset}` builds the full-size model, which takes minutes per step on a CPU "
                f"and needs the weights downloaded; pick `{cpu}` to try the whole flow here."
            )
        elif model is not None and (missing := missing_weights(model)):
            fetch = " and ".join(f"`hf download {source}`" for source in missing)
            lines.append(f"⚠ **The weights of `{preset}` are not on this machine**: fetch them once while online ({fetch}), or pick `{cpu}` to try the whole flow.")
        if not torch.cuda.is_available():
            cores, load = cpu_load()
            if load >= 0.5:
                lines.append(
                    f"This machine: {plural(cores, 'core')}, other work keeps about {load:.1f} of them busy now, so a job trains on "
                    f"{plural(free_cores(cores, load), 'core')} and slower than the note says; the progress bar shows the real speed."
                )
        return "\n\n".join(lines)

    def new_run_name(self, category: str | None) -> str:
        try:
            return self.ws.new_run_name(category or "run")
        except HuviError:
            return self.ws.new_run_name("run")

    def _request(self, category, run_name, preset, stage, mode, values: list, extra: str, prompts: str | None) -> TrainRequest:
        preset = preset or self.preset.name
        base = load_config(preset)
        overrides = []
        for (key, label), value in zip(TRAIN_SETTINGS, values):
            if value is None or value == "":
                raise HuviError(f"{label} is empty; give it a value.")
            if not _same(value, config_value(base, key)):
                value = int(value) if isinstance(value, float) and value.is_integer() and isinstance(config_value(base, key), int) else value
                overrides.append(f"{key}={value}")
        if prompts_list := preview_prompts(prompts):
            overrides.append(f"{PROMPTS_KEY}={json.dumps(prompts_list)}")
        for line in (extra or "").splitlines():
            line = line.strip().removeprefix("--set").strip()
            if line and not line.startswith("#"):
                overrides.append(line)
        stages = STAGES if stage in (None, "", "both") else (stage,)
        return TrainRequest(self.category_root(category), self.ws.run_dir(run_name), preset, tuple(overrides), stages, mode or "clip")

    def command(self, category, run_name, preset, stage, mode, *rest) -> str:
        """The CLI line that trains with these settings (or why there is none yet)."""
        *values, extra, prompts = rest
        try:
            request = self._request(category, run_name, preset, stage, mode, values, extra, prompts)
            load_config(request.preset, list(request.overrides))
        except HuviError as err:
            return f"# {err}"
        return display_command(train_argv(request))

    def form_from_run(self, run_name: str | None) -> list:
        """The form's fields (category, preset, stages, DPO mode, settings, more settings, preview
        prompts, a new run name, the note above the form) filled from the settings of `run_name`."""
        keep = [gr.skip()] * (6 + len(TRAIN_SETTINGS))
        try:
            run_dir = self.run_dir(run_name)
            request = run_request(run_dir, read_job(run_dir))
            cfg = Run(request.run).read_config()
        except HuviError:
            return keep + [self.new_run_name(self.default_category()), ""]
        category = request.category.name if request.category.resolve().parent == self.ws.categories.resolve() else None
        fields = {key for key, _ in TRAIN_SETTINGS} | {PROMPTS_KEY}
        extra = [o for o in request.overrides if o.partition("=")[0] not in fields]
        note = f"The form holds the settings of **{run_name}**, the run shown below: *Start* trains a new run with them (change any first)."
        if category is None:
            note += f" Its category `{request.category}` is not in this app's folder, so the category field is left as it was."
        return [
            self.category_dropdown(category, keep=False) if category else gr.skip(),
            preset_dropdown(request.preset) if request.preset in self.presets() else gr.skip(),
            request.stage_arg if request.stage_arg != "dpo" else gr.skip(),
            request.mode,
            *[config_value(cfg, key) for key, _ in TRAIN_SETTINGS],
            "\n".join(extra),
            "\n".join(cfg.generate.preview_prompts),
            self.new_run_name(category or self.default_category()),
            note,
        ]

    # start, stop, resume -----------------------------------------------------------------------
    @user_errors
    def start(self, category, run_name, preset, stage, mode, *rest):
        *values, extra, prompts = rest
        request = self._request(category, run_name, preset, stage, mode, values, extra, prompts)
        status = self.jobs.start(request)
        gr.Info(f"Started {status.run.name}. Training runs in the background: you may close this page and come back.")
        return self.run_dropdown(status.run.name, keep=False), self.new_run_name(category)

    @user_errors
    def stop(self, run_name: str) -> None:
        self.jobs.stop(self.run_dir(run_name))
        gr.Info("Stopping after the current step; a checkpoint will be written.")

    @user_errors
    def resume(self, run_name: str) -> None:
        self.jobs.resume(self.run_dir(run_name))
        gr.Info(f"Resumed {run_name}.")

    # watching a run ----------------------------------------------------------------------------
    def watched_run(self) -> str | None:
        """The run to show on load: the one training now, else the newest."""
        active = self.jobs.active()
        if active is not None and active.parent.resolve() == self.ws.runs.resolve():
            return active.name
        runs = self.runs()
        return runs[0] if runs else None

    def run_dropdown_watched(self) -> gr.Dropdown:
        return self.run_dropdown(self.watched_run(), keep=False)

    def status(self, run_name: str | None) -> JobStatus | None:
        if not run_name:
            return None
        try:
            return self.jobs.status(self.ws.run_dir(run_name))
        except HuviError:
            return None

    @staticmethod
    def status_markdown(status: JobStatus | None, rows: list[dict] | tuple = ()) -> str:
        """The run's state, its DPO health (from its metrics `rows`), how it was started and resumes."""
        if status is None:
            return "No run picked. Start one above, or pick a run to watch."
        title = STATE_TITLES.get(status.state, status.state)
        lines = [f"### {STATE_ICONS.get(status.state, '')} {title} — `{status.run.name}`", status.message]
        if status.state == "finished":
            lines.append("Next: make clips with it in **5 · Generate**, or download its LoRA in **6 · Export**.")
        health = summary(rows)
        if health:
            lines.append(health)
        if status.first_command:
            lines.append(f"Started with: `{status.first_command}`")
        if status.command and status.command != status.first_command:
            lines.append(f"Latest launch: `{status.command}`")
        if status.can_resume:
            category = (read_job(status.run) or {}).get("category") or Run(status.run).read_info().get("category")
            if category:
                lines.append(f"Resume from a shell: `{display_command(resume_argv(Path(category), status.run))}`")
        return "\n\n".join(lines)

    @staticmethod
    def progress_html(status: JobStatus | None) -> str:
        """The progress bar with steps, speed, time so far and the expected end; an animated bar
        with what the process is doing while it starts; a clear end state."""
        if status is None or (not status.progress.total and status.state != "starting"):
            return ""
        p, elapsed = status.progress, status.elapsed
        if status.state == "starting":
            since = f" for {duration(elapsed)}" if elapsed is not None else ""
            text = f"Starting{since}: {status.phase}. Progress counts from the first step."
            return (
                '<div class="huvi-progress huvi-progress-starting" role="progressbar" aria-busy="true"><div class="huvi-progress-fill"></div></div>'
                f'<div class="huvi-progress-text">{escape(text)}</div>'
            )
        parts = [f"{p.done} / {p.total} steps ({100 * p.fraction:.0f}%)"]
        if p.seconds_per_step:
            parts.append(f"{p.seconds_per_step:.2f} s/step")
        if status.active:
            if elapsed is not None:
                parts.append(f"running for {duration(elapsed)}")
            if p.eta_seconds:
                parts.append(f"about {duration(p.eta_seconds)} left, done about {clock(status.started + elapsed + p.eta_seconds) if elapsed is not None else '?'}")
        elif status.ended is not None:
            took = f" after {duration(elapsed)}" if elapsed is not None else ""
            parts.append(f"{'finished' if status.state == 'finished' else status.state} {clock(status.ended)}{took}")
        done = " huvi-progress-done" if status.state == "finished" else ""
        mark = "✔ " if status.state == "finished" else ""
        return (
            f'<div class="huvi-progress{done}" role="progressbar" aria-valuenow="{p.done}" aria-valuemax="{p.total}">'
            f'<div class="huvi-progress-fill" style="width:{100 * p.fraction:.1f}%"></div></div>'
            f'<div class="huvi-progress-text">{escape(mark + " · ".join(parts))}</div>'
        )

    def busy_note(self) -> tuple[gr.Button, str]:
        """Start is offered only while no job holds the GPU; the note says which one does."""
        holder = self.jobs.holder()
        if holder is None:
            return gr.Button(interactive=True), ""
        return gr.Button(interactive=False), f"⏸ {busy_subject()} is busy ({holder}); one job runs at a time, so *Start* waits until it ends."

    def previews(self, run: Path) -> list[tuple[str, str]]:
        """(clip, caption) of every preview the run wrote, in training order."""
        try:
            cfg = Run(run).read_config()
        except HuviError:
            return []
        prompts = ["", *cfg.generate.preview_prompts]
        return [
            (str(c.path), f"{c.stage} · step {c.step}" + (f" · {prompts[c.prompt]}" if 0 < c.prompt < len(prompts) else ""))
            for c in list_previews(run)
        ]

    def poll(self, run_name: str | None, seen: dict | None):
        """Everything the Train tab shows about `run_name` (keys: SHOWN); unchanged plots, previews
        and log are skipped."""
        seen = dict(seen or {})
        status = self.status(run_name)
        if seen.get("run") != run_name:
            seen = {"run": run_name}
        rows = Run(status.run).read_metrics() if status else []
        out = {"status": self.status_markdown(status, rows), "progress": self.progress_html(status)}
        out["start"], out["busy"] = self.busy_note()
        out["stop"] = gr.Button(interactive=bool(status and status.can_stop))
        out["resume"] = gr.Button(interactive=bool(status and status.can_resume))
        if seen.get("rows") != len(rows):
            seen["rows"] = len(rows)
            totals = status.progress.totals if status else dict.fromkeys(STAGES, 0)
            plots = metric_plots(rows, totals, held_out=_holds_out(status.run) if status else False)
            out |= {
                key: gr.LinePlot(value=plot.frame, visible=not plot.empty, x_lim=plot.x_lim, y_lim=plot.y_lim, title=plot.title or None)
                for key, plot in plots.items()
            }
            out["health_box"] = gr.Accordion(visible=not plots["health"].empty)
        else:
            out |= {k: gr.skip() for k in (*PLOTS, "health_box")}
        previews = self.previews(status.run) if status else []
        if seen.get("previews") != [p for p, _ in previews]:
            seen["previews"] = [p for p, _ in previews]
            out["previews"] = gr.Gallery(value=previews or None, visible=bool(previews), label=f"Previews ({len(previews)}, fixed seed)")
        else:
            out["previews"] = gr.skip()
        log = log_tail(status.run) if status else ""
        out["log"] = log if seen.get("log") != log else gr.skip()
        seen["log"] = log
        return [out[key] for key in SHOWN], seen

    def job_status(self, run_name: str) -> dict:
        """API: the state of a run as plain JSON."""
        status = self.status(run_name)
        if status is None:
            return {"state": "none", "message": f"No run named {run_name!r}."}
        p = status.progress
        return {
            "run": status.run.name, "state": status.state, "message": status.message, "stage": p.stage, "step": p.step,
            "done": p.done, "total": p.total, "eta_seconds": p.eta_seconds, "elapsed_seconds": status.elapsed,
            "command": status.command, "first_command": status.first_command,
        }


def _holds_out(run_dir: Path) -> bool:
    """Whether the run scores held-out pairs (data.holdout > 0)."""
    try:
        return Run(run_dir).read_config().data.holdout > 0
    except HuviError:
        return False
