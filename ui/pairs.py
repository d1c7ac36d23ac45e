"""Handlers of the Pairs tab: the preference pairs the DPO stage trains on, in the order a run with
the shown seed trains on them (huvi.workspace.preference_pairs, the trainer's own form_pairs), each
clip with its thumbnail, and the clips left out and why."""

from __future__ import annotations

import random
from pathlib import Path

from huvi.clip_view import thumbnail
from huvi.errors import HuviError
from huvi.pairs import split_pairs
from huvi.workspace import PairsView, preference_pairs
from ui.common import Context, escape, file_url, names, plural, user_errors

PAIR_COLUMNS = ["#", "winner", "loser", "used for"]


def stars(score: int | None) -> str:
    return f"{score}★" if score else "unrated"


def left_out_markdown(view: PairsView) -> str:
    """Why clips or clip combinations are not in the pairs: no rating, or the same rating."""
    parts = []
    if view.unrated:
        parts.append(f"**Unrated, so in no pair** (rate them in the **Rate** tab): {names(view.unrated)}.")
    if view.ties:
        groups = "\n".join(f"- {score}★: {names(clips)}" for score, clips in view.ties.items())
        parts.append(
            f"**Equal ratings never pair** — a tie says nothing about which clip is better, so these "
            f"{view.tied_combinations} combination{'s are' if view.tied_combinations != 1 else ' is'} left out:\n{groups}"
        )
    if view.close:
        parts.append(
            f"**Ratings less than {view.min_gap}★ apart never pair** (the Train tab's rating gap, data.min_rating_gap; a 1★ difference says more "
            f"about rating noise than about what you prefer), so {plural(view.close, 'combination')} of different ratings "
            f"{'are' if view.close != 1 else 'is'} left out."
        )
    if view.unpaired:
        why = "the same rating" if view.min_gap == 1 else f"the same rating or one less than {view.min_gap}★ away"
        parts.append(f"**In no pair at all** (every other rated clip has {why}): {names(view.unpaired)}.")
    if not parts:
        return "Every clip is in at least one pair, and no two clips share a rating."
    return "\n\n".join(parts)


def _clip_cell(root: Path, name: str, score: int | None) -> str:
    try:
        image = f'<img src="{file_url(thumbnail(root, name))}" alt="" loading="lazy">'
    except (HuviError, OSError):  # a clip that does not decode (check names it) or is gone
        image = '<span class="huvi-thumb-missing">✖</span>'
    return f'<div class="huvi-pair-clip">{image}<span><code>{escape(name)}</code><br>{stars(score)}</span></div>'


def pairs_table(root: Path, view: PairsView, held: int) -> str:
    """Every pair as one row of an HTML table: number, winner and loser (thumbnail, name, rating), use."""
    head = "".join(f"<th>{column}</th>" for column in PAIR_COLUMNS)
    rows = "".join(
        f'<tr class="{"held" if i <= held else "train"}"><td>{i}</td><td>{_clip_cell(root, p.winner, p.winner_score)}</td>'
        f"<td>{_clip_cell(root, p.loser, p.loser_score)}</td><td>{'held out' if i <= held else 'training'}</td></tr>"
        for i, p in enumerate(view.pairs, start=1)
    )
    return f'<table class="huvi-pairs"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


class PairsHandlers(Context):
    @staticmethod
    def new_seed() -> int:
        return random.randrange(10_000)

    def pairs_view(self, name: str | None, seed, holdout, min_gap=1) -> tuple[str, str, str]:
        """(headline, table, who is left out) of the pairs a run with `seed` and data.min_rating_gap
        `min_gap` trains on."""
        if not name:
            return "No category yet: create one in the **Category** tab.", "", ""
        try:
            root = self.category_root(name)
            view = preference_pairs(root, int(seed or 0), max(1, int(min_gap or 1)))
        except HuviError as err:
            return f"✖ {err}", "", ""
        try:
            held = len(split_pairs(view.pairs, float(holdout or 0))[1])  # as the trainer splits them
        except (TypeError, ValueError):
            held = 0
        n = len(view.pairs)
        head = f"**{plural(n, 'preference pair')}** in `{name}`"
        if n:
            split = f"the first {held} held out to score accuracy, {n - held} for training" if held else "all used for training"
            head += f", in the order a run with seed **{view.seed}** trains on them ({split})."
        else:
            apart = "differently" if view.min_gap == 1 else f"{view.min_gap}★ or more apart"
            head += f": rate at least two clips {apart} in the **Rate** tab to form one."
        return head, pairs_table(root, view, held) if n else "", left_out_markdown(view)

    @user_errors
    def api_pairs(self, category: str, seed: int, min_gap: int | None = None) -> dict:
        """The preference pairs of `category` in the order a run with `seed` and data.min_rating_gap
        `min_gap` (default: this machine's preset's) trains on them, and the clips left out: unrated,
        tied (rating -> clips), too close (a count), unpaired."""
        view = preference_pairs(self.category_root(category), int(seed), int(min_gap or self.min_rating_gap()))
        return {
            "seed": view.seed,
            "count": len(view.pairs),
            "pairs": [{"winner": p.winner, "loser": p.loser, "winner_score": p.winner_score, "loser_score": p.loser_score} for p in view.pairs],
            "unrated": view.unrated,
            "ties": {str(score): clips for score, clips in view.ties.items()},
            "tied_combinations": view.tied_combinations,
            "min_gap": view.min_gap,
            "close_combinations": view.close,
            "unpaired": view.unpaired,
        }
