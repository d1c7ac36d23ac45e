"""3 · Pairs: the preference pairs in training order, with thumbnails, and the clips left out."""

from __future__ import annotations

import gradio as gr

from ui.pairs import PairsHandlers


def pairs_tab(h: PairsHandlers, seed_value: int) -> dict:
    gr.Markdown(
        "The preference pairs the DPO stage trains on: every two clips with different ratings, the higher rated one "
        "the winner. A run shuffles them with its **seed** setting, so the order below is the order trained. This "
        "seed is the Train tab's seed: change it here or there, or reshuffle, and the other follows."
    )
    with gr.Row(equal_height=True):
        seed = gr.Number(seed_value, label="Seed (the training run's seed)", precision=0, minimum=0, scale=0, min_width=280)
        reshuffle = gr.Button("Reshuffle (new seed)", scale=0, min_width=200)
    count = gr.Markdown()
    table = gr.HTML()
    gr.Markdown("### Left out")
    left_out = gr.Markdown()
    gr.api(h.api_pairs, api_name="pairs")
    return {"seed": seed, "reshuffle": reshuffle, "count": count, "table": table, "left_out": left_out}
