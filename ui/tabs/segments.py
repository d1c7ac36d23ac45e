"""DenseDPO · segment labels: make aligned pairs with a trained run, then label each pair segment by
segment while both clips play side by side over the pair's timeline."""

from __future__ import annotations

import gradio as gr

from ui.labelling import LABEL_CHOICES, LabelHandlers
from ui.tabs import GPU


def segments_tab(h: LabelHandlers, category: gr.Dropdown, clips_version: gr.Number) -> dict:
    """`clips_version` is bumped when new aligned clips are written: the Category tab lists them."""
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
            count = gr.Number(0, label="Segments per pair", precision=0, minimum=0)  # filled with the run's count
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
    run.change(h.segment_count, inputs=run, outputs=count, api_visibility="private")
    make.click(
        h.make_pairs, inputs=[category, run, clips, eta, seed, count], outputs=pair,
        api_visibility="private", concurrency_limit=1, concurrency_id=GPU, show_progress_on=video,
    ).success(lambda v: v + 1, inputs=clips_version, outputs=clips_version, api_visibility="private")
    gr.api(h.api_make_pairs, api_name="make_aligned_pairs", concurrency_limit=1, concurrency_id=GPU)
    gr.api(h.api_label, api_name="label_segment")
    on_open = [
        {"fn": h.run_dropdown, "inputs": run, "outputs": run, "api_visibility": "private"},
        {"fn": h.segment_count, "inputs": run, "outputs": count, "api_visibility": "private"},
        {"fn": h.pair_dropdown, "inputs": [category, pair], "outputs": pair, "api_visibility": "private"},
        {"fn": h.source_clips, "inputs": [category, clips], "outputs": clips, "api_visibility": "private"},
        {"fn": h.working_on, "inputs": category, "outputs": working_on, "api_visibility": "private"},
    ]
    return {"pair": pair, "on_open": on_open}
