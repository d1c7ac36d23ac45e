"""1 · Category: pick or create a category, its prompt and clips, and what training sees of a clip."""

from __future__ import annotations

import json
from collections.abc import Iterator

import gradio as gr

from huvi.video import VIDEO_SUFFIXES
from ui.category import CategoryHandlers
from ui.tabs import quiet
from ui.tabs.picker import model_picker


def clip_cards(entries: list, empty: str | None) -> Iterator:
    """Lay the clips out in rows of four cards, each with its playable video (a GIF as an image);
    yields each entry while its card is open, for the controls below the video. `empty` is shown
    when there are no clips."""
    if not entries and empty:
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


def category_tab(h: CategoryHandlers, version: gr.Number) -> dict:
    with gr.Row(equal_height=True):
        category = gr.Dropdown(h.categories(), value=h.default_category(), label="Category", scale=3, allow_custom_value=True)
        _, preset, _ = model_picker(h, "Preset: the frames and size clips must fit")
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    with gr.Accordion("New category", open=False), gr.Row(equal_height=True):
        new_name = gr.Textbox(label="Name", placeholder="horse running (spaces become '-')", scale=2)
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
        entries = h.clips(name)
        mine = [e for e in entries if not e.generated]
        made = [e for e in entries if e.generated]
        for group, empty in ((mine, "No clips yet: add some above."), (made, None)):
            if group is made and made:
                gr.Markdown(
                    f"### Made for DenseDPO pairs ({len(made)})\nClips that *Make aligned pairs* generated: they are labelled "
                    "segment by segment in the **DenseDPO** tab, never rated, and do not count toward the 8–16 clips."
                )
            for entry in clip_cards(group, empty):
                gr.Markdown(h.clip_caption(entry), elem_classes="huvi-clip-info")
                remove = gr.Button("Remove", size="sm", variant="stop", key=f"remove-{name}-{entry.name}")
                remove.click(
                    lambda v, clip=entry.name: h.remove_clip(name, clip, v),
                    inputs=version, outputs=[summary, version], api_visibility="private",
                    js=f"(v) => confirm({json.dumps(f'Delete {entry.name} and its rating?')}) ? v : -1",  # -1: kept
                )

    with gr.Accordion("What training sees of a clip", open=False) as seen_box:
        gr.Markdown(
            "The frames the picked **preset** reads from a clip: the part of each frame it keeps (outlined on the first "
            "frame as stored), the size it scales that to, and the frames it takes."
        )
        seen_clip = gr.Dropdown([], label="Clip", allow_custom_value=True)
        with gr.Row():
            seen_first = gr.Image(label="First frame as stored; the outline is what training keeps", interactive=False, height=240, scale=2, elem_classes="huvi-upscale")
            seen_note = gr.Markdown()
        seen_frames = gr.Gallery(label="The frames training reads, at training size (source frame numbers)", columns=8, object_fit="contain", elem_classes="huvi-pixels", fit_columns=False)

    state = quiet()
    save_prompt.click(h.save_prompt, inputs=[category, prompt], outputs=summary, api_name="save_prompt", show_progress_on=state)
    # Dropping or choosing files adds them at once: each is decoded, refused with its reason or kept.
    upload.upload(h.add_clips, inputs=[category, upload, preset], outputs=[summary, upload, report], api_name="add_clips", show_progress_on=report).success(
        lambda v: v + 1, inputs=version, outputs=version, api_visibility="private"
    )
    check.click(h.check_clips, inputs=[category, preset], outputs=check_result, api_name="check_category")
    seen_shown = [seen_first, seen_frames, seen_note]
    for trigger in (seen_box.expand, category.change, version.change):
        trigger(h.seen_clip_dropdown, inputs=[category, seen_clip], outputs=seen_clip, api_visibility="private")
    for trigger in (seen_clip.change, preset.change):
        trigger(h.training_view, inputs=[category, seen_clip, preset], outputs=seen_shown, api_visibility="private", show_progress_on=state)
    # API twins of the per-clip controls (the rendered ones are private)
    gr.api(h.api_remove_clip, api_name="remove_clip")
    gr.api(h.api_list_clips, api_name="list_clips")
    return {
        "category": category, "prompt": prompt, "summary": summary, "new_name": new_name, "new_prompt": new_prompt,
        "create": create, "refresh": refresh, "quiet": state,
    }
