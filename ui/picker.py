"""Handlers of the model picker: a model family, then one of its presets, each preset listed with its
VRAM tier and what it gives up (huvi.catalogue). The Category and Train tabs each hold one."""

from __future__ import annotations

import gradio as gr

from huvi.catalogue import catalogue, family_default, family_entries, family_title, preset_entry


def family_choices() -> list[tuple[str, str]]:
    """(title, model.family) of every family that has a preset, in the registry's order."""
    return [(family_title(family), family) for family in dict.fromkeys(entry.family for entry in catalogue())]


def preset_choices(family: str) -> list[tuple[str, str]]:
    """(label with tier and what it gives up, name) of the family's presets, the CPU one first."""
    return [(entry.label, entry.name) for entry in family_entries(family)]


def family_of(preset: str | None):
    """The family of `preset`, for the family choice to follow a preset set from elsewhere (a run's)."""
    entry = preset_entry(preset or "")
    return entry.family if entry else gr.skip()


def preset_dropdown(preset: str | None) -> gr.Dropdown:
    """The preset list of `preset`'s family with `preset` picked; a preset outside the catalogue (a
    YAML file given by path) is shown as it is."""
    entry = preset_entry(preset or "")
    if entry is None:
        return gr.Dropdown(value=preset)
    return gr.Dropdown(choices=preset_choices(entry.family), value=preset)


def pick_family(family: str, machine_default: str) -> gr.Dropdown:
    """The family's presets, at the one a pick of it starts at (huvi.catalogue.family_default)."""
    return preset_dropdown(family_default(family, machine_default))
