"""7 · Runs: every run in one table, runs compared side by side, and deleting a run."""

from __future__ import annotations

import gradio as gr

from ui.runs import RunsHandlers
from ui.tabs import quiet


def runs_tab(h: RunsHandlers) -> dict:
    gr.Markdown(
        "Every run in the runs folder, newest first: what it trained and how it ended (end figures are means over the "
        "last 20 steps). Compare runs to see the settings in which they differ."
    )
    with gr.Row():
        refresh = gr.Button("↻ Refresh", scale=0, min_width=100)
    table = gr.Dataframe(interactive=False, wrap=True, show_label=False)
    gr.Markdown("### Compare")
    with gr.Row(equal_height=True):
        chosen = gr.Dropdown(h.runs(), value=[], multiselect=True, label="Runs to compare (two or more)", scale=5)
        compare = gr.Button("Compare", variant="primary", scale=0, min_width=140)
    note = gr.Markdown()
    compared = gr.Dataframe(interactive=False, wrap=True, show_label=False, visible=False)
    curves = gr.LinePlot(
        x="step", y="value", color="run", title="Implicit accuracy (DPO, mean of 20 steps)", y_lim=[0, 1], height=260, visible=False, x_axis_format="d",
    )
    gr.Markdown("### Delete")
    with gr.Row(equal_height=True):
        doomed = gr.Dropdown(h.runs(), value=None, label="Run to delete (its folder and everything in it)", scale=5)
        delete = gr.Button("Delete run", variant="stop", scale=0, min_width=140)
    confirmed = gr.Textbox(visible=False)  # the run the browser confirmed deleting ("" when cancelled)

    refresh.click(h.runs_table, outputs=table, api_visibility="private").then(
        h.run_choices, inputs=chosen, outputs=chosen, api_visibility="private"
    ).then(h.run_pick, inputs=doomed, outputs=doomed, api_visibility="private")
    compare.click(h.compare, inputs=chosen, outputs=[compared, curves, note], api_name="compare_runs")
    delete.click(
        h.delete, inputs=[doomed, confirmed], outputs=[table, doomed, chosen], api_visibility="private", show_progress_on=quiet(),
        js="(name, c) => [name, name && confirm(`Delete the run ${name} and every file in its folder?`) ? name : '']",
    )
    on_open = [
        {"fn": h.runs_table, "outputs": table, "api_visibility": "private"},
        {"fn": h.run_choices, "inputs": chosen, "outputs": chosen, "api_visibility": "private"},
        {"fn": h.run_pick, "inputs": doomed, "outputs": doomed, "api_visibility": "private"},
    ]
    return {"on_open": on_open}
