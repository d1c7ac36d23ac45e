"""4 · Train: the model picker, the settings form and its shell command, Start / Stop / Resume, and the run shown below:
its state, progress, plots, preview clips and log, polled from its run folder."""

from __future__ import annotations

import gradio as gr

from ui.plots import SERIES_COLORS, TITLES
from ui.tabs import GPU, quiet
from ui.tabs.picker import model_picker
from ui.training import MODE_CHOICES, SETTING, SHOWN, STAGE_CHOICES, TRAIN_SETTINGS, TrainHandlers

POLL_SECONDS = 2.0


def train_tab(h: TrainHandlers) -> dict:
    form_note = gr.Markdown()
    with gr.Row(equal_height=True):
        _, preset, family_picked = model_picker(h, "Preset: VRAM tier · what it gives up")
    preset_info = gr.Markdown(h.preset_info(h.preset.name))
    with gr.Row(equal_height=True):
        category = gr.Dropdown(h.categories(), value=h.default_category(), label="Category", scale=2, allow_custom_value=True)
        run_name = gr.Textbox(h.new_run_name(h.default_category()), label="Run name (a new folder under runs/)", scale=3)
        stage = gr.Dropdown(STAGE_CHOICES, value="both", label="Stages", scale=2)
        mode = gr.Dropdown(MODE_CHOICES, value="clip", label="DPO learns from", scale=2)
    values = h.preset_values(h.preset.name)

    def field(i: int) -> gr.Number:
        whole = isinstance(values[i], int)
        return gr.Number(values[i], label=TRAIN_SETTINGS[i][1], precision=0 if whole else None, minimum=0)

    main, advanced = [SETTING[k] for k in ("motion.steps", "dpo.steps", "seed", "generate.preview_every")], [SETTING["data.holdout"], SETTING["data.min_rating_gap"]]
    tuned = [i for i in range(len(TRAIN_SETTINGS)) if i not in main + advanced]
    fields: dict[int, gr.Number] = {}
    with gr.Row():
        fields |= {i: field(i) for i in main}
    prompts = gr.Textbox(
        label="More preview prompts, one per line (each preview also renders the category's prompt)",
        placeholder="a square sliding left\na circle sliding right", lines=1, max_lines=6,
    )
    with gr.Row():
        fields |= {i: field(i) for i in tuned}
    with gr.Accordion("Advanced settings", open=False):
        with gr.Row():
            fields |= {i: field(i) for i in advanced}
        extra = gr.Textbox(
            label="More settings, one key=value per line (as --set on the command line)",
            placeholder="dpo.adapter.alpha=16\ndata.hflip=true", lines=2,
        )
    settings = [fields[i] for i in range(len(TRAIN_SETTINGS))]
    command = gr.Code(label="The same run from a shell", language="shell", interactive=False, elem_classes="huvi-command")
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop (checkpoint)", variant="stop", interactive=False)
        resume = gr.Button("Resume", interactive=False)
    busy = gr.Markdown()

    gr.Markdown("---")
    with gr.Row(equal_height=True):
        watch = gr.Dropdown(h.runs(), value=h.watched_run(), label="Run shown below", scale=4, allow_custom_value=True)
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    status = gr.Markdown()
    progress = gr.HTML()
    plot = {"x": "step", "y": "value", "color": "series", "color_map": SERIES_COLORS, "height": 260, "visible": False, "x_axis_format": "d"}
    with gr.Row():
        motion_loss = gr.LinePlot(title=TITLES["motion_loss"], **plot)
        dpo_loss = gr.LinePlot(title=TITLES["dpo_loss"], **plot)
    with gr.Row():
        accuracy = gr.LinePlot(title=TITLES["accuracy"], y_lim=[0, 1], **plot)
        margin = gr.LinePlot(title=TITLES["margin"], **plot)
    with gr.Accordion("Denoising loss of winners and losers (trained vs reference)", open=False, visible=False) as health_box:
        gr.Markdown(
            "A healthy DPO run raises the losers' loss above the reference while the winners' stays near it; "
            "winners rising too means the learning rate is too high."
        )
        health = gr.LinePlot(**(plot | {"visible": True}))
    previews = gr.Gallery(label="Previews", columns=6, height=260, visible=False, elem_classes="huvi-pixels", fit_columns=False)
    with gr.Accordion("Log", open=False):
        log = gr.Textbox(lines=14, max_lines=14, show_label=False, autoscroll=True, interactive=False)
    seen = gr.State({})
    timer = gr.Timer(POLL_SECONDS)

    inputs = [category, run_name, preset, stage, mode, *settings, extra, prompts]
    components = {
        "status": status, "progress": progress, "start": start, "busy": busy, "stop": stop, "resume": resume,
        "motion_loss": motion_loss, "dpo_loss": dpo_loss, "accuracy": accuracy, "margin": margin, "health": health,
        "health_box": health_box, "previews": previews, "log": log,
    }
    shown = [components[key] for key in SHOWN]
    form = [category, preset, stage, mode, *settings, extra, prompts, run_name, form_note]
    state = quiet()

    def refresh_view(run, seen_before):
        out, seen_after = h.poll(run, seen_before)
        return [*out, seen_after]

    for component in inputs:
        component.change(h.command, inputs=inputs, outputs=command, api_visibility="private", show_progress="hidden")
    preset.change(h.preset_info, inputs=preset, outputs=preset_info, api_visibility="private")
    # a user's pick (of a preset, or of a family: its first preset) fills in the preset's values; a form filled from a run keeps the run's
    preset_picked = [
        preset.input(h.preset_values, inputs=preset, outputs=settings, api_visibility="private"),
        family_picked.then(h.preset_values, inputs=preset, outputs=settings, api_visibility="private"),
    ]
    category.change(h.new_run_name, inputs=category, outputs=run_name, api_visibility="private")
    start.click(
        h.start, inputs=inputs, outputs=[watch, run_name], api_name="start_training", concurrency_limit=1, concurrency_id=GPU, show_progress_on=state
    ).success(refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private")
    stop.click(h.stop, inputs=watch, outputs=None, api_name="stop_training").then(
        refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private"
    )
    resume.click(h.resume, inputs=watch, outputs=None, api_name="resume_training", concurrency_limit=1, concurrency_id=GPU).then(
        refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private"
    )
    refresh.click(h.run_dropdown, inputs=watch, outputs=watch, api_visibility="private")
    watch.input(h.form_from_run, inputs=watch, outputs=form, api_visibility="private", show_progress="hidden")
    watch.change(refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private", show_progress="hidden")
    timer.tick(refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private", show_progress="hidden", concurrency_limit=None)
    gr.api(h.job_status, api_name="job_status")
    return {
        "watch": watch, "category": category, "preset_picked": preset_picked, "settings": settings, "command": command, "inputs": inputs, "form": form,
    }
