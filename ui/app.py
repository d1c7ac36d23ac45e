"""`build_app(handlers) -> gr.Blocks`: the layout of the huvi app and the wiring of its events.

Tabs follow the workflow: Category (clips) -> Rate -> Pairs -> Train -> Generate -> Export, plus
DenseDPO's aligned pairs and segment labels. Handlers live in `ui.handlers` (`ui.labelling` for
the DenseDPO tab).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import gradio as gr

from huvi.export import FORMATS as EXPORT_FORMATS
from huvi.video import VIDEO_SUFFIXES
from ui.handlers import MODE_CHOICES, PAIR_COLUMNS, SERIES_COLORS, SETTING, STAGE_CHOICES, TRAIN_SETTINGS, Handlers
from ui.labelling import LABEL_CHOICES, LabelHandlers

GPU = "gpu"  # concurrency_id shared by every event that may use the GPU: one at a time
POLL_SECONDS = 2.0

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")
CSS = """
.huvi-banner { border-left: 4px solid var(--color-accent); padding: 0.25rem 0.9rem; }
.huvi-progress { height: 0.9rem; border-radius: 0.45rem; background: var(--neutral-200); overflow: hidden; }
.huvi-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.6s ease; }
.huvi-progress-text { font-size: 0.9rem; margin-top: 0.3rem; font-variant-numeric: tabular-nums; }
.huvi-clip { border: 1px solid var(--border-color-primary); border-radius: 0.5rem; padding: 0.4rem; }
.huvi-clip-info p { font-size: 0.85rem; margin: 0; font-variant-numeric: tabular-nums; }
.huvi-rating .wrap { flex-wrap: nowrap; gap: 0.25rem; }
.huvi-rating label { padding: 0.25rem 0.5rem !important; min-width: 0; }
.huvi-command textarea, .huvi-command code { font-family: var(--font-mono); font-size: 0.85rem; }
.huvi-timeline { display: flex; gap: 2px; width: 100%; }
.huvi-seg { border-radius: 0.3rem; padding: 0.3rem 0.4rem; text-align: center; font-size: 0.85rem; min-width: 0; overflow: hidden; }
.huvi-seg-count { font-size: 0.85rem; margin: 0 0 0.3rem 0; }
"""

RATING_CHOICES = [(str(n), n) for n in range(1, 6)]
TABS = ("1 · Category", "2 · Rate", "3 · Pairs", "4 · Train", "5 · Generate", "6 · Export", "DenseDPO · segment labels")


def build_app(h: Handlers) -> gr.Blocks:
    with gr.Blocks(title="huvi") as demo:
        gr.Markdown(
            "# huvi\nFew-shot preference fine-tuning of a text-to-video model: upload 8–16 clips of one action, "
            "rate them, train a motion LoRA and a Diffusion-DPO LoRA, generate, export."
        )
        gr.Markdown(h.banner(), elem_classes="huvi-banner")
        # Bumped when clips are added or removed, which re-renders both clip lists. A hidden number,
        # not a gr.State: the Remove button's confirmation (browser-side js) must be able to replace it.
        version = gr.Number(0, visible=False, precision=0)

        with gr.Tab(TABS[0], id="category"):
            cat = category_tab(h, version)
        with gr.Tab(TABS[1], id="rate"):
            rate = rate_tab(h, cat["category"], version)
        with gr.Tab(TABS[2], id="pairs") as pairs_tab_:
            pairs = pairs_tab(h)
        with gr.Tab(TABS[3], id="train") as train_tab_:
            train = train_tab(h)
        with gr.Tab(TABS[4], id="generate") as generate_tab_:
            generate = generate_tab(h)
        with gr.Tab(TABS[5], id="export") as export_tab_:
            export = export_tab(h)
        with gr.Tab(TABS[6], id="segments") as segments_tab_:
            segments = segments_tab(LabelHandlers(h.ws, h.jobs, h.preset), cat["category"])

        category = cat["category"]
        views = [cat["prompt"], cat["summary"], rate["summary"]]
        # The category made or picked in the Category tab is the one Rate and Pairs show and Train trains.
        cat["create"].click(
            h.create_category,
            inputs=[cat["new_name"], cat["new_prompt"]],
            outputs=[category, train["category"], cat["new_name"], cat["new_prompt"]],
            api_name="create_category",
        )
        category.input(lambda name: name, inputs=category, outputs=train["category"], api_visibility="private")
        category.change(h.category_view, inputs=category, outputs=views, api_visibility="private")
        version.change(h.summary, inputs=category, outputs=rate["summary"], api_visibility="private")
        cat["refresh"].click(h.category_dropdown, inputs=category, outputs=category, api_visibility="private").then(
            h.category_view, inputs=category, outputs=views, api_visibility="private"
        )

        # Pairs: shown for the picked category, the Train tab's seed and held-out share. The Pairs
        # seed and the Train seed are one setting shown twice: a user edit of either sets the other.
        seed, holdout = train["settings"][SETTING["seed"]], train["settings"][SETTING["data.holdout"]]
        pairs_inputs = [category, pairs["seed"], holdout]
        pairs_outputs = [pairs["count"], pairs["table"], pairs["left_out"]]
        for trigger in (pairs_tab_.select, category.change, pairs["seed"].change, holdout.change):
            trigger(h.pairs_view, inputs=pairs_inputs, outputs=pairs_outputs, api_visibility="private", show_progress="hidden")
        pairs["reshuffle"].click(lambda: (h.new_seed(),) * 2, outputs=[pairs["seed"], seed], api_visibility="private")
        pairs["seed"].input(lambda value: value, inputs=pairs["seed"], outputs=seed, api_visibility="private")
        seed.input(lambda value: value, inputs=seed, outputs=pairs["seed"], api_visibility="private")
        train["preset"].change(h.preset_values, inputs=train["preset"], outputs=train["settings"], api_visibility="private").then(
            lambda value: value, inputs=seed, outputs=pairs["seed"], api_visibility="private"
        )
        gr.api(h.api_pairs, api_name="pairs")

        # On every page load: the lists, the command, and the run training now (state lives on disk).
        demo.load(h.category_dropdown, inputs=category, outputs=category, api_visibility="private")
        demo.load(h.category_view, inputs=category, outputs=views, api_visibility="private")
        demo.load(h.command, inputs=train["inputs"], outputs=train["command"], api_visibility="private")
        demo.load(h.run_dropdown_watched, outputs=train["watch"], api_visibility="private")
        # Lists that other tabs change are refreshed when their tab is opened.
        train_tab_.select(h.run_dropdown, inputs=train["watch"], outputs=train["watch"], api_visibility="private")
        generate_tab_.select(h.trained_run_dropdown, inputs=generate["run"], outputs=generate["run"], api_visibility="private")
        generate_tab_.select(h.gpu_note, outputs=generate["gpu"], api_visibility="private")
        export_tab_.select(h.trained_run_dropdown, inputs=export["run"], outputs=export["run"], api_visibility="private")
        for refresh_segments in segments["on_open"]:
            segments_tab_.select(**refresh_segments)
    return demo


def clip_cards(entries: list, empty: str) -> Iterator:
    """Lay the clips out in rows of four cards, each with its playable video (a GIF as an image);
    yields each entry while its card is open, for the controls below the video. `empty` is shown
    when there are no clips."""
    if not entries:
        gr.Markdown(empty)
    for start in range(0, len(entries), 4):
        with gr.Row(equal_height=True):
            for entry in entries[start : start + 4]:
                with gr.Column(min_width=200, elem_classes="huvi-clip"):
                    if entry.path.suffix == ".gif":
                        gr.Image(str(entry.path), label=entry.name, interactive=False, height=160)
                    else:
                        gr.Video(str(entry.path), label=entry.name, interactive=False, height=160, loop=True, autoplay=False)
                    yield entry


# 1 · Category ------------------------------------------------------------------------------------
def category_tab(h: Handlers, version: gr.Number) -> dict:
    with gr.Row(equal_height=True):
        category = gr.Dropdown(h.categories(), value=h.default_category(), label="Category", scale=3, allow_custom_value=True)
        preset = gr.Dropdown(h.presets(), value=h.preset.name, label="Preset (frame count and size the clips must fit)", scale=2)
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    with gr.Accordion("New category", open=False), gr.Row(equal_height=True):
        new_name = gr.Textbox(label="Name", placeholder="horse-running", scale=2)
        new_prompt = gr.Textbox(label="Prompt", placeholder="a horse running across a field", scale=4)
        create = gr.Button("Create", variant="primary", scale=0, min_width=100)
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(label="Prompt of this category (the text every clip is trained with)", scale=5)
        save_prompt = gr.Button("Save prompt", scale=0, min_width=120)
    summary = gr.Markdown(h.clip_summary(h.default_category()))
    upload = gr.File(
        label="Add clips: drop MP4, WebM, MOV or GIF files here, or click to choose several",
        file_count="multiple", file_types=list(VIDEO_SUFFIXES), type="filepath", height=140,
    )
    report = gr.Markdown()
    with gr.Row():
        check = gr.Button("Check every clip (decode)", scale=0, min_width=240)
    check_result = gr.Markdown()
    gr.Markdown("### Clips\nEach clip as stored, with its frame count and size. Rating comes next, in the **Rate** tab.")

    @gr.render(inputs=[category, version])
    def clip_list(name, _version):
        for entry in clip_cards(h.clips(name), "No clips yet: add some above."):
            gr.Markdown(h.clip_caption(entry), elem_classes="huvi-clip-info")
            remove = gr.Button("Remove", size="sm", variant="stop", key=f"remove-{name}-{entry.name}")
            remove.click(
                lambda v, clip=entry.name: h.remove_clip(name, clip, v),
                inputs=version, outputs=[summary, version], api_visibility="private",
                js=f"(v) => confirm({json.dumps(f'Delete {entry.name} and its rating?')}) ? v : -1",  # -1: kept
            )

    save_prompt.click(h.save_prompt, inputs=[category, prompt], outputs=summary, api_name="save_prompt")
    # Dropping or choosing files adds them at once: each is decoded, refused with its reason or kept.
    upload.upload(h.add_clips, inputs=[category, upload, preset], outputs=[summary, upload, report], api_name="add_clips").success(
        lambda v: v + 1, inputs=version, outputs=version, api_visibility="private"
    )
    check.click(h.check_clips, inputs=[category, preset], outputs=check_result, api_name="check_category")
    # API twins of the per-clip controls (the rendered ones are private)
    gr.api(h.api_remove_clip, api_name="remove_clip")
    gr.api(h.api_list_clips, api_name="list_clips")
    return {
        "category": category, "prompt": prompt, "summary": summary, "new_name": new_name, "new_prompt": new_prompt,
        "create": create, "refresh": refresh,
    }


# 2 · Rate ----------------------------------------------------------------------------------------
def rate_tab(h: Handlers, category: gr.Dropdown, version: gr.Number) -> dict:
    gr.Markdown(
        "Rate every clip from 1 (worst) to 5 (best) for how well it shows the action. Each rating is saved to the "
        "category folder as you click; clips with different ratings form the preference pairs (next tab), "
        "unrated clips are not trained on."
    )
    summary = gr.Markdown(h.summary(h.default_category()))

    @gr.render(inputs=[category, version])
    def rating_list(name, _version):
        for entry in clip_cards(h.clips(name), "No clips to rate yet: add some in the **Category** tab."):
            rating = gr.Radio(
                RATING_CHOICES, value=entry.score, interactive=True, elem_classes="huvi-rating",
                label=rating_label(entry),
                key=f"rating-{name}-{entry.name}",
            )
            rating.input(
                lambda score, clip=entry.name: h.set_score(name, clip, score),
                inputs=rating, outputs=summary, api_visibility="private",
            )

    gr.api(h.api_set_score, api_name="set_score")
    return {"summary": summary}


def rating_label(entry) -> str:
    if entry.score:
        return "rating (1 worst, 5 best)"
    if entry.paired:  # e.g. an aligned clip: labelled in the DenseDPO tab; a rating would add it to the rating pairs
        return "in a pair (DenseDPO tab): no rating needed"
    return "unrated: not trained on yet"


# 3 · Pairs ---------------------------------------------------------------------------------------
def pairs_tab(h: Handlers) -> dict:
    gr.Markdown(
        "The preference pairs the DPO stage trains on: every two clips with different ratings, the higher rated one "
        "the winner. A run shuffles them with its **seed** setting, so the order below is the order trained. This "
        "seed is the Train tab's seed: change it here or there, or reshuffle, and the other follows."
    )
    with gr.Row(equal_height=True):
        seed = gr.Number(h.preset_values(h.preset.name)[SETTING["seed"]], label="Seed (the training run's seed)", precision=0, minimum=0, scale=0, min_width=280)
        reshuffle = gr.Button("Reshuffle (new seed)", scale=0, min_width=200)
    count = gr.Markdown()
    table = gr.Dataframe(headers=PAIR_COLUMNS, interactive=False, wrap=True, max_height=420, show_label=False)
    gr.Markdown("### Left out")
    left_out = gr.Markdown()
    return {"seed": seed, "reshuffle": reshuffle, "count": count, "table": table, "left_out": left_out}


# 4 · Train ---------------------------------------------------------------------------------------
def train_tab(h: Handlers) -> dict:
    with gr.Row(equal_height=True):
        category = gr.Dropdown(h.categories(), value=h.default_category(), label="Category", scale=2, allow_custom_value=True)
        preset = gr.Dropdown(h.presets(), value=h.preset.name, label="Preset (VRAM tier)", scale=2)
        run_name = gr.Textbox(h.new_run_name(h.default_category()), label="Run name (a new folder under runs/)", scale=3)
        stage = gr.Dropdown(STAGE_CHOICES, value="both", label="Stages", scale=2)
        mode = gr.Dropdown(MODE_CHOICES, value="clip", label="DPO learns from", scale=2)
    preset_info = gr.Markdown(h.preset_info(h.preset.name))
    values = h.preset_values(h.preset.name)

    def field(i: int) -> gr.Number:
        whole = isinstance(values[i], int)
        return gr.Number(values[i], label=TRAIN_SETTINGS[i][1], precision=0 if whole else None, minimum=0)

    main, advanced = [SETTING[k] for k in ("motion.steps", "dpo.steps", "seed", "generate.preview_every")], [SETTING["data.holdout"]]
    tuned = [i for i in range(len(TRAIN_SETTINGS)) if i not in main + advanced]
    fields: dict[int, gr.Number] = {}
    with gr.Row():
        fields |= {i: field(i) for i in main}
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

    gr.Markdown("---")
    with gr.Row(equal_height=True):
        watch = gr.Dropdown(h.runs(), value=h.watched_run(), label="Run shown below", scale=4, allow_custom_value=True)
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    status = gr.Markdown()
    progress = gr.HTML()
    plot = {"x": "step", "y": "value", "color": "series", "color_map": SERIES_COLORS, "height": 260, "visible": False}
    loss = gr.LinePlot(title="Loss", **plot)
    with gr.Row():
        accuracy = gr.LinePlot(title="Implicit accuracy (DPO)", y_lim=[0, 1], **plot)
        margin = gr.LinePlot(title="Reward margin (DPO)", **plot)
    with gr.Accordion("Denoising loss of winners and losers (trained vs reference)", open=False, visible=False) as health_box:
        gr.Markdown(
            "A healthy DPO run raises the losers' loss above the reference while the winners' stays near it; "
            "winners rising too means the learning rate is too high."
        )
        health = gr.LinePlot(**(plot | {"visible": True}))
    preview = gr.Video(label="Preview", interactive=False, loop=True, autoplay=True, height=256, visible=False)
    with gr.Accordion("Log", open=False):
        log = gr.Textbox(lines=14, max_lines=14, show_label=False, autoscroll=True, interactive=False)
    seen = gr.State({})
    timer = gr.Timer(POLL_SECONDS)

    inputs = [category, run_name, preset, stage, mode, *settings, extra]
    shown = [status, progress, stop, resume, loss, accuracy, margin, health, health_box, preview, log]
    keys = ["status", "progress", "stop", "resume", "loss", "accuracy", "margin", "health", "health_box", "preview", "log"]

    def refresh_view(run, seen_before):
        out, seen_after = h.poll(run, seen_before)
        return [out[k] for k in keys] + [seen_after]

    for component in inputs:
        component.change(h.command, inputs=inputs, outputs=command, api_visibility="private", show_progress="hidden")
    preset.change(h.preset_info, inputs=preset, outputs=preset_info, api_visibility="private")
    category.change(h.new_run_name, inputs=category, outputs=run_name, api_visibility="private")
    start.click(h.start, inputs=inputs, outputs=[watch, run_name], api_name="start_training", concurrency_limit=1, concurrency_id=GPU).then(
        refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private"
    )
    stop.click(h.stop, inputs=watch, outputs=None, api_name="stop_training").then(
        refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private"
    )
    resume.click(h.resume, inputs=watch, outputs=None, api_name="resume_training", concurrency_limit=1, concurrency_id=GPU).then(
        refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private"
    )
    refresh.click(h.run_dropdown, inputs=watch, outputs=watch, api_visibility="private")
    watch.change(refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private", show_progress="hidden")
    timer.tick(refresh_view, inputs=[watch, seen], outputs=[*shown, seen], api_visibility="private", show_progress="hidden", concurrency_limit=None)
    gr.api(h.job_status, api_name="job_status")
    return {"watch": watch, "category": category, "preset": preset, "settings": settings, "command": command, "inputs": inputs}


# 5 · Generate ------------------------------------------------------------------------------------
def generate_tab(h: Handlers) -> dict:
    runs = h.trained_runs()
    gr.Markdown("Runs with a trained adapter are listed here; the DPO adapter's strength can be dialled.")
    gpu = gr.Markdown(h.gpu_note())
    with gr.Row():
        with gr.Column(scale=2):
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Trained run", allow_custom_value=True)
            prompt = gr.Textbox(h.run_prompt(runs[0] if runs else None), label="Prompt", lines=2)
            first_frame = gr.Image(label="First frame (optional; made with DPO-SDXL when empty)", type="filepath", height=200)
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0)
                steps = gr.Number(0, label="Steps (0: the preset's)", precision=0, minimum=0)
                guidance = gr.Number(0, label="Guidance (0: the preset's)", minimum=0)
            dpo_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="DPO adapter strength (0 = motion only)")
            motion_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Motion adapter strength")
            compare = gr.Checkbox(False, label="Also render without DPO, side by side")
            generate = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            video = gr.Video(label="Result", interactive=False, loop=True, autoplay=True, height=360)
            compared = gr.Video(label="Without DPO | with DPO", interactive=False, loop=True, visible=False, height=360)
            used_frame = gr.Image(label="First frame used", interactive=False, height=200)
            note = gr.Markdown()
    run.change(h.run_prompt, inputs=run, outputs=prompt, api_visibility="private")
    # Queued behind any other GPU event of this app; refused with a sentence while a training job holds the GPU.
    generate.click(
        h.generate,
        inputs=[run, prompt, first_frame, seed, steps, guidance, dpo_scale, motion_scale, compare],
        outputs=[video, compared, used_frame, note],
        api_name="generate", concurrency_limit=1, concurrency_id=GPU,
    ).then(h.gpu_note, outputs=gpu, api_visibility="private")
    return {"run": run, "gpu": gpu}


# 6 · Export --------------------------------------------------------------------------------------
def export_tab(h: Handlers) -> dict:
    runs = h.trained_runs()
    formats = list(EXPORT_FORMATS)
    gr.Markdown("Each export writes a model card beside the weights, with the run's settings.")
    with gr.Row():
        with gr.Column(scale=2):
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Trained run", allow_custom_value=True)
            fmt = gr.Radio(formats, value=formats[0], label="Format")
            gr.Markdown(
                "- **diffusers**: `load_lora_weights` on an AnimateDiff pipeline\n"
                "- **kohya**: `lora_unet_*` keys with alpha, for A1111 / ComfyUI LoRA loaders\n"
                "- **comfy-motion**: the temporal layers in AnimateDiff naming, for ComfyUI-AnimateDiff-Evolved motion LoRAs"
            )
            merge = gr.Checkbox(False, label="Merge the motion and DPO adapters into one file")
            export = gr.Button("Export", variant="primary")
        with gr.Column(scale=3):
            files = gr.File(label="Files (⇣ beside a file downloads it)", file_count="multiple", interactive=False)
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(show_label=False)
            card = gr.Markdown(label="Model card")
    export.click(h.export, inputs=[run, fmt, merge], outputs=[files, card, metadata], api_name="export", concurrency_limit=1)
    return {"run": run}


# DenseDPO · segment labels -----------------------------------------------------------------------
def segments_tab(h: LabelHandlers, category: gr.Dropdown) -> dict:
    gr.Markdown(
        "DenseDPO (Wu et al. 2025) learns from **segment labels**: two clips denoised from one partly noised real clip "
        "share its motion and layout, so each short segment can be judged on its own — first better, second better, or "
        "tie. Make aligned pairs with a trained run, label them here, then train with **DPO learns from: segment labels** "
        "in the Train tab (`python -m huvi train --mode dense`)."
    )
    working_on = gr.Markdown()
    with gr.Accordion("New aligned pairs", open=False):
        with gr.Row(equal_height=True):
            runs = h.runs()
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run whose model denoises (motion stage trained)", scale=3, allow_custom_value=True)
            clips = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Source clips (none chosen: every rated clip)", scale=4)
        with gr.Row(equal_height=True):
            eta = gr.Slider(0.05, 1.0, value=0.75, step=0.05, label="Noise strength eta (lower keeps more of the source)")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
            count = gr.Number(0, label="Segments per pair (0: the preset's)", precision=0, minimum=0)
            make = gr.Button("Make aligned pairs", variant="primary")
    with gr.Row(equal_height=True):
        pair = gr.Dropdown([], label="Pair", scale=5)  # filled when a category is picked
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    with gr.Row():
        with gr.Column(scale=3):
            video = gr.Video(label="first (left) · second (right), in sync", interactive=False, loop=True, autoplay=True, height=320)
        with gr.Column(scale=2):
            note = gr.Markdown()
            timeline = gr.HTML()
            with gr.Row():
                all_first = gr.Button("All: first", size="sm")
                all_second = gr.Button("All: second", size="sm")
                all_tie = gr.Button("All: tie", size="sm")
                clear = gr.Button("Clear", size="sm")
            remove = gr.Button("Remove this pair (keeps its clips)", size="sm", variant="stop")
    version = gr.Number(0, visible=False, precision=0)  # bumped when every label changes at once: redraws the choices
    confirmed = gr.Textbox(visible=False)  # the pair the browser confirmed removing ("" when cancelled)

    @gr.render(inputs=[category, pair, version])
    def segment_choices(name, key, _version):
        segments = h.segments(name, key)
        for start in range(0, len(segments), 4):  # rows of four, in timeline order
            with gr.Row(equal_height=True):
                for seg in segments[start : start + 4]:
                    choice = gr.Radio(
                        LABEL_CHOICES, value=seg.label, label=f"Segment {seg.index + 1} · frames {seg.start}–{seg.end - 1}",
                        key=f"seg-{name}-{key}-{seg.index}", min_width=200, elem_classes="huvi-seg-choice",
                    )
                    choice.input(
                        lambda label, k=seg.index: h.set_label(name, key, k, label),
                        inputs=choice, outputs=timeline, api_visibility="private",
                    ).success(h.pair_dropdown, inputs=[category, pair], outputs=pair, api_visibility="private")

    shown = [video, timeline, note]
    for trigger in (category.change, refresh.click):
        trigger(h.pair_dropdown, inputs=[category, pair], outputs=pair, api_visibility="private")
    category.change(h.source_clips, inputs=category, outputs=clips, api_visibility="private")
    category.change(h.working_on, inputs=category, outputs=working_on, api_visibility="private")
    pair.change(h.view, inputs=[category, pair], outputs=shown, api_visibility="private")
    for button, label in ((all_first, "a"), (all_second, "b"), (all_tie, "tie"), (clear, None)):
        button.click(
            lambda name, key, v, label=label: h.set_all(name, key, label, v),
            inputs=[category, pair, version], outputs=[timeline, version], api_visibility="private",
        )
    remove.click(
        h.remove, inputs=[category, pair, confirmed], outputs=[pair, video], api_visibility="private",
        js="(name, key, c) => [name, key, confirm('Remove this pair? Its clips stay in the category.') ? key : '']",
    )
    make.click(
        h.make_pairs, inputs=[category, run, clips, eta, seed, count], outputs=pair,
        api_visibility="private", concurrency_limit=1, concurrency_id=GPU,
    )
    gr.api(h.api_make_pairs, api_name="make_aligned_pairs", concurrency_limit=1, concurrency_id=GPU)
    gr.api(h.api_label, api_name="label_segment")
    on_open = [
        {"fn": h.run_dropdown, "inputs": run, "outputs": run, "api_visibility": "private"},
        {"fn": h.pair_dropdown, "inputs": [category, pair], "outputs": pair, "api_visibility": "private"},
        {"fn": h.source_clips, "inputs": [category, clips], "outputs": clips, "api_visibility": "private"},
        {"fn": h.working_on, "inputs": category, "outputs": working_on, "api_visibility": "private"},
    ]
    return {"pair": pair, "on_open": on_open}
