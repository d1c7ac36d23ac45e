"""Handlers of the Rate tab: a 1-5 rating per clip people supplied, saved as it is clicked, and the
category's summary (rating histogram, preference pairs, every problem `huvi check` reports).

Clips that DenseDPO's `dense-pairs` made are not listed: they are labelled segment by segment in
the DenseDPO tab, and a rating would add them to the rating pairs and the motion stage.
"""

from __future__ import annotations

from huvi.errors import HuviError
from huvi.workspace import set_score, summarize
from ui.common import Context, plural, user_errors


def rating_summary(ctx: Context, name: str | None) -> str:
    """Counts, pairs, and every problem the CLI's `check` would report (without decoding)."""
    if not name:
        return "No category yet: create one in the **Category** tab."
    try:
        s = summarize(ctx.category_root(name), ctx.min_rating_gap())
    except HuviError as err:
        return f"✖ {err}"
    ratings = " · ".join(f"{score}★ ×{n}" for score, n in s.histogram.items() if n) or "none yet"
    lines = [f"**{plural(s.clips, 'clip')}**, {s.rated} rated ({ratings}) → **{s.pairs} preference pairs**"]
    errors = [p.message for p in s.problems if p.level == "error"]
    warnings = [p.message for p in s.problems if p.level == "warning"]
    lines.append("✔ Ready to train." if not errors else "✖ Not ready to train:")
    items = [f"- {m}" for m in errors] + [f"- ⚠ {m}" for m in warnings]
    return "\n\n".join(lines) + ("\n\n" + "\n".join(items) if items else "")


class RateHandlers(Context):
    def summary(self, name: str | None) -> str:
        return rating_summary(self, name)

    @user_errors
    def set_score(self, name: str, clip: str, score: int | None) -> str:
        set_score(self.category_root(name), clip, score)
        return self.summary(name)

    def api_set_score(self, category: str, clip: str, score: int) -> str:
        """Rate a clip 1-5 (0 clears the rating); returns the category summary."""
        return self.set_score(category, clip, score or None)
