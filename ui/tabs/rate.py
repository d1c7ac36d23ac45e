"""2 · Rate: a 1-5 rating per clip, saved as it is clicked, and what the ratings make of the category."""

from __future__ import annotations

import gradio as gr

from ui.category import CategoryHandlers
from ui.rating import RateHandlers
from ui.tabs.category import clip_cards

RATING_CHOICES = [(str(n), n) for n in range(1, 6)]


def rating_label(entry) -> str:
    if entry.score:
        return "rating (1 worst, 5 best)"
    if entry.paired:  # in an explicit pair of category.json: trained on through it, a rating is optional
        return "in a pair (DenseDPO tab): no rating needed"
    return "unrated: not trained on yet"


def rate_tab(h: RateHandlers, clips: CategoryHandlers, category: gr.Dropdown, version: gr.Number) -> dict:
    gr.Markdown(
        "Rate every clip from 1 (worst) to 5 (best) for how well it shows the action. Each rating is saved to the "
        "category folder as you click; clips with different ratings form the preference pairs (next tab), "
        "unrated clips are not trained on. Clips made for DenseDPO pairs are labelled in the **DenseDPO** tab instead."
    )
    summary = gr.Markdown(h.summary(h.default_category()))

    @gr.render(inputs=[category, version])
    def rating_list(name, _version):
        for entry in clip_cards(clips.clips_to_rate(name), "No clips to rate yet: add some in the **Category** tab."):
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
