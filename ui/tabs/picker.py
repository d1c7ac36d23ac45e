"""The model picker, laid out in the row it is called in: the model family, then its presets, each
with its VRAM tier and what it gives up. The family follows the preset wherever it is set from."""

from __future__ import annotations

import gradio as gr

from ui.common import Context
from ui.picker import family_choices, family_of, pick_family, preset_choices


def model_picker(h: Context, preset_label: str) -> tuple[gr.Radio, gr.Dropdown, gr.events.Dependency]:
    """(family, preset, the event of a family picked: its preset list and the preset it starts at)."""
    family = family_of(h.preset.name)
    family_box = gr.Radio(family_choices(), value=family, label="Model family", scale=2, min_width=460, elem_classes="huvi-family")  # one line
    # A custom value is allowed for the API (any preset name or YAML path; loading it says when it is
    # none): a fresh session holds only the default family's choices.
    preset = gr.Dropdown(preset_choices(family), value=h.preset.name, label=preset_label, scale=4, allow_custom_value=True)
    picked = family_box.input(lambda name: pick_family(name, h.preset.name), inputs=family_box, outputs=preset, api_visibility="private")
    preset.change(family_of, inputs=preset, outputs=family_box, api_visibility="private", show_progress="hidden")
    return family_box, preset, picked
