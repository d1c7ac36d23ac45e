"""Handlers of the Generate tab: a clip from a trained run (huvi.generate), with the run's own
sampler settings shown as the defaults, and the clips made with it before, each with what made it."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from huvi.errors import HuviError
from huvi.gpu_lock import busy_subject
from huvi.jobs import read_job
from huvi.runs import Run
from huvi.workspace import read_meta
from ui.common import Context, gpu_task, user_errors


@gpu_task
def _generate_on_gpu(models, run_dir: Path, request, out: Path, progress):
    return models.get(run_dir).generate(request, out, progress=progress, show_progress=False)


def sample_caption(settings: dict) -> str:
    """seed 3 · 10 steps · DPO 1.0 · "a square sliding"."""
    return (
        f"seed {settings.get('seed')} · {settings.get('steps')} steps · DPO {settings.get('dpo_scale')}"
        f" · {str(settings.get('prompt', ''))[:60]!r}"
    )


class GenerateHandlers(Context):
    def gpu_note(self) -> str:
        """A warning while another job holds the GPU (or, without one, the machine); "" when it is free."""
        holder = self.jobs.holder()
        if holder is None:
            return ""
        return (
            f"⚠ **{busy_subject()} is busy ({holder}).** One job runs at a time, so Generate is refused until it ends: "
            "wait for it, or stop it in the **Train** tab."
        )

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

    def run_defaults(self, run_name: str | None):
        """(prompt, steps, guidance, first-frame box) for a picked run: its prompt and its own
        generate.steps and generate.guidance as values, and where a missing first frame comes from."""
        try:
            cfg = Run(self.run_dir(run_name)).read_config()
        except HuviError:
            return self.run_prompt(run_name), gr.skip(), gr.skip(), gr.skip()
        gen = cfg.generate
        if cfg.generate.first_frame.source == "shapes":
            source = "empty: a shape is drawn, of the shape and colour the prompt names"
        elif cfg.model.source == "tiny":
            source = "empty: the tiny preset's random SDXL draws noise, like its videos"
        else:
            source = "empty: DPO-SDXL draws one from the prompt"
        return (
            self.run_prompt(run_name),
            gr.Number(gen.steps, label=f"Steps (the run's: {gen.steps})"),
            gr.Number(gen.guidance, label=f"Guidance (the run's: {gen.guidance:g})"),
            gr.Image(label=f"First frame (optional; {source})"),
        )

    def samples(self, run_name: str | None) -> list[tuple[str, str]]:
        """(clip, caption) of the clips generated with the run in the app, newest first."""
        from huvi.generate import list_samples

        try:
            return [(str(s.video), sample_caption(s.settings)) for s in list_samples(self.run_dir(run_name))]
        except HuviError:
            return []

    def samples_gallery(self, run_name: str | None) -> gr.Gallery:
        found = self.samples(run_name)
        return gr.Gallery(value=found or None, label=f"Earlier clips of this run ({len(found)}): pick one to reuse its settings", visible=bool(found))

    def reuse_sample(self, run_name: str | None, evt: gr.SelectData):
        """(prompt, seed, steps, guidance, DPO strength, motion strength) of the picked earlier clip."""
        from huvi.generate import list_samples

        try:
            settings = list_samples(self.run_dir(run_name))[evt.index].settings
        except (HuviError, IndexError):
            return [gr.skip()] * 6
        keys = ("prompt", "seed", "steps", "guidance", "dpo_scale", "motion_scale")
        return [settings[key] if key in settings else gr.skip() for key in keys]

    @user_errors
    def generate(self, run_name, prompt, first_frame, seed, steps, guidance, dpo_scale, motion_scale, compare, progress=gr.Progress()):  # noqa: B008 (how Gradio hands a handler its progress bar)
        from huvi.generate import GenerateRequest  # here: the app starts without loading diffusers' pipelines

        run_dir = self.run_dir(run_name)
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
            f"Saved to `{result.video}` (settings in `{result.video.with_suffix('.json').name}`).",
        )
