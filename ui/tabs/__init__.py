"""The layout of each tab of the app and the wiring of the events inside it, one module per tab;
`ui.app.build_app` puts them together and wires what crosses tabs. Handlers are in `ui.*`."""

from __future__ import annotations

import gradio as gr

GPU = "gpu"  # concurrency_id shared by every event that may use the GPU: one at a time


def quiet() -> gr.State:
    """A target for an event's `show_progress_on`: a handler that refuses its input (a user error,
    shown as a toast) then leaves every output as it was, instead of covering the outputs (often the
    inputs themselves) with a red "Error" pill."""
    return gr.State()
