"""`build_app(ctx) -> gr.Blocks`: the huvi app, its tabs put together, and the events that cross tabs.

Tabs follow the workflow: Category (clips) -> Rate -> Pairs -> Train -> Generate -> Export, then Runs
(all runs, compared, deleted) and DenseDPO's aligned pairs and segment labels. Each tab's layout is in
`ui.tabs.<tab>`, its handlers in `ui.category`, `ui.rating`, `ui.pairs`, `ui.training`,
`ui.generating`, `ui.exporting`, `ui.runs` and `ui.labelling`.
"""

from __future__ import annotations

import gradio as gr

from ui.category import CategoryHandlers
from ui.common import Context
from ui.exporting import ExportHandlers
from ui.generating import GenerateHandlers
from ui.labelling import LabelHandlers
from ui.pairs import PairsHandlers
from ui.rating import RateHandlers
from ui.runs import RunsHandlers
from ui.tabs.category import category_tab
from ui.tabs.export import export_tab
from ui.tabs.generate import generate_tab
from ui.tabs.pairs import pairs_tab
from ui.tabs.rate import rate_tab
from ui.tabs.runs import runs_tab
from ui.tabs.segments import segments_tab
from ui.tabs.train import train_tab
from ui.training import SETTING, TrainHandlers

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")
CSS = """
.huvi-banner { border-left: 4px solid var(--color-accent); padding: 0.25rem 0.9rem; }
.huvi-progress { height: 0.9rem; border-radius: 0.45rem; background: var(--neutral-200); overflow: hidden; }
.huvi-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.6s ease; }
.huvi-progress-done .huvi-progress-fill { background: #059669; }
.huvi-progress-starting .huvi-progress-fill { width: 30%; animation: huvi-slide 1.6s ease-in-out infinite alternate; }
@keyframes huvi-slide { from { margin-left: 0; } to { margin-left: 70%; } }
.huvi-progress-text { font-size: 0.9rem; margin-top: 0.3rem; font-variant-numeric: tabular-nums; }
.huvi-clip { border: 1px solid var(--border-color-primary); border-radius: 0.5rem; padding: 0.4rem; }
.huvi-clip-info p { font-size: 0.85rem; margin: 0; font-variant-numeric: tabular-nums; }
.huvi-rating .wrap { flex-wrap: nowrap; gap: 0.25rem; }
.huvi-rating label { padding: 0.25rem 0.5rem !important; min-width: 0; }
.huvi-family .wrap { flex-wrap: nowrap; gap: 0.4rem; }
.huvi-family label { flex: none; padding: 0.3rem 0.6rem !important; white-space: nowrap; }
.huvi-command textarea, .huvi-command code { font-family: var(--font-mono); font-size: 0.85rem; }
.huvi-timeline { display: flex; gap: 2px; width: 100%; }
.huvi-seg { border-radius: 0.3rem; padding: 0.3rem 0.4rem; text-align: center; font-size: 0.85rem; min-width: 0; overflow: hidden; }
.huvi-seg-count { font-size: 0.85rem; margin: 0 0 0.3rem 0; }
.huvi-pairs { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
.huvi-pairs th, .huvi-pairs td { border-bottom: 1px solid var(--border-color-primary); padding: 0.25rem 0.5rem; text-align: left; vertical-align: middle; }
.huvi-pairs tr.held td { background: var(--neutral-100); }
.huvi-pair-clip { display: flex; gap: 0.5rem; align-items: center; }
.huvi-pair-clip img { height: 48px; width: auto; border-radius: 0.25rem; image-rendering: pixelated; }
/* tiny clips and frames (32 px) are shown scaled up, pixels kept sharp */
.huvi-pixels img, .huvi-pixels video { image-rendering: pixelated; }
.huvi-upscale img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.huvi-pairs th:first-child { width: 3rem; }
"""

TABS = (
    "1 · Category", "2 · Rate", "3 · Pairs", "4 · Train", "5 · Generate", "6 · Export", "7 · Runs", "DenseDPO · segment labels",
)


def build_app(ctx: Context) -> gr.Blocks:
    def make(cls):
        return cls(ctx.ws, ctx.jobs, ctx.preset)

    clips, rating, pairs_h, training = make(CategoryHandlers), make(RateHandlers), make(PairsHandlers), make(TrainHandlers)
    generating = make(GenerateHandlers)
    with gr.Blocks(title="huvi") as demo:
        gr.Markdown(
            "# huvi\nFew-shot preference fine-tuning of a text-to-video model: upload 8–16 clips of one action, "
            "rate them, train a motion LoRA and a Diffusion-DPO LoRA, generate, export."
        )
        gr.Markdown(ctx.banner(), elem_classes="huvi-banner")
        # Bumped when clips are added or removed (or made for DenseDPO pairs), which re-renders both clip lists. A hidden number,
        # not a gr.State: the Remove button's confirmation (browser-side js) must be able to replace it.
        version = gr.Number(0, visible=False, precision=0)

        with gr.Tab(TABS[0], id="category"):
            cat = category_tab(clips, version)
        with gr.Tab(TABS[1], id="rate") as rate_tab_:
            rate = rate_tab(rating, clips, cat["category"], version)
        with gr.Tab(TABS[2], id="pairs") as pairs_tab_:
            pairs = pairs_tab(pairs_h, training.preset_values(ctx.preset.name)[SETTING["seed"]])
        with gr.Tab(TABS[3], id="train") as train_tab_:
            train = train_tab(training)
        with gr.Tab(TABS[4], id="generate") as generate_tab_:
            generate = generate_tab(generating)
        with gr.Tab(TABS[5], id="export") as export_tab_:
            export = export_tab(make(ExportHandlers))
        with gr.Tab(TABS[6], id="runs") as runs_tab_:
            runs = runs_tab(make(RunsHandlers))
        with gr.Tab(TABS[7], id="segments") as segments_tab_:
            segments = segments_tab(make(LabelHandlers), cat["category"], version)

        category = cat["category"]
        views = [cat["prompt"], cat["summary"], rate["summary"]]
        # The category made or picked in the Category tab is the one Rate and Pairs show and Train trains.
        cat["create"].click(
            clips.create_category,
            inputs=[cat["new_name"], cat["new_prompt"]],
            outputs=[category, train["category"], cat["new_name"], cat["new_prompt"]],
            api_name="create_category", show_progress_on=cat["quiet"],
        )
        category.input(lambda name: name, inputs=category, outputs=train["category"], api_visibility="private")
        category.change(clips.category_view, inputs=category, outputs=views, api_visibility="private")
        version.change(rating.summary, inputs=category, outputs=rate["summary"], api_visibility="private")
        version.change(clips.clip_summary, inputs=category, outputs=cat["summary"], api_visibility="private")
        # Both Refresh buttons and opening the Train tab re-read the category list (a category made in
        # another browser, or by hand, appears); each picker keeps its choice while it exists.
        for trigger in (cat["refresh"].click, train_tab_.select):
            trigger(clips.category_dropdown, inputs=category, outputs=category, api_visibility="private")
            trigger(clips.category_dropdown, inputs=train["category"], outputs=train["category"], api_visibility="private")
        cat["refresh"].click(clips.category_view, inputs=category, outputs=views, api_visibility="private")
        rate_tab_.select(rating.summary, inputs=category, outputs=rate["summary"], api_visibility="private")  # labels change its warnings

        # Pairs: shown for the picked category, the Train tab's seed, held-out share and rating gap. The
        # Pairs seed and the Train seed are one setting shown twice: a user edit of either sets the other.
        seed, holdout, gap = (train["settings"][SETTING[key]] for key in ("seed", "data.holdout", "data.min_rating_gap"))
        pairs_inputs = [category, pairs["seed"], holdout, gap]
        pairs_outputs = [pairs["count"], pairs["table"], pairs["left_out"]]
        for trigger in (pairs_tab_.select, category.change, pairs["seed"].change, holdout.change, gap.change):
            trigger(pairs_h.pairs_view, inputs=pairs_inputs, outputs=pairs_outputs, api_visibility="private", show_progress="hidden")
        pairs["reshuffle"].click(lambda: (pairs_h.new_seed(),) * 2, outputs=[pairs["seed"], seed], api_visibility="private")
        pairs["seed"].input(lambda value: value, inputs=pairs["seed"], outputs=seed, api_visibility="private")
        seed.input(lambda value: value, inputs=seed, outputs=pairs["seed"], api_visibility="private")
        for picked in train["preset_picked"]:
            picked.then(lambda value: value, inputs=seed, outputs=pairs["seed"], api_visibility="private")

        # On every page load: the lists, the run training now (state lives on disk) and the form filled
        # from that run, so what the form says and what trains below agree.
        demo.load(clips.category_dropdown, inputs=category, outputs=category, api_visibility="private")
        demo.load(clips.category_view, inputs=category, outputs=views, api_visibility="private")
        demo.load(clips.category_dropdown, inputs=train["category"], outputs=train["category"], api_visibility="private").then(
            training.run_dropdown_watched, outputs=train["watch"], api_visibility="private"
        ).then(
            training.form_from_run, inputs=train["watch"], outputs=train["form"], api_visibility="private"
        ).then(training.command, inputs=train["inputs"], outputs=train["command"], api_visibility="private").then(
            lambda value: value, inputs=seed, outputs=pairs["seed"], api_visibility="private"
        )
        demo.load(generating.run_defaults, inputs=generate["run"], outputs=generate["defaults"], api_visibility="private")
        # Lists that other tabs change are refreshed when their tab is opened.
        train_tab_.select(training.run_dropdown, inputs=train["watch"], outputs=train["watch"], api_visibility="private")
        generate_tab_.select(ctx.trained_run_dropdown, inputs=generate["run"], outputs=generate["run"], api_visibility="private")
        generate_tab_.select(generating.gpu_note, outputs=generate["gpu"], api_visibility="private")
        generate_tab_.select(generating.samples_gallery, inputs=generate["run"], outputs=generate["samples"], api_visibility="private")
        export_tab_.select(ctx.trained_run_dropdown, inputs=export["run"], outputs=export["run"], api_visibility="private")
        for refresh in runs["on_open"]:
            runs_tab_.select(**refresh)
        for refresh in segments["on_open"]:
            segments_tab_.select(**refresh)
    return demo
