"""Preference pairs: from 1-5 ratings (HuViDPO: random pairs of differently rated clips), and the
explicit pairs a category file lists, labelled per clip or per segment (DenseDPO)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from huvi.segments import label_signs


@dataclass(frozen=True)
class Pair:
    winner: str  # clip file name with the higher score
    loser: str


@dataclass(frozen=True)
class ExplicitPair:
    """One entry of category.json's "pairs": two clips of equal length and a person's labels.

    `winner` is the clip-level label, `segments` one label per equal run of frames
    (`huvi.segments`); labels are "a", "b" or "tie", and a segment label may be None (not labelled
    yet). A pair may carry either, both, or neither (unlabelled: kept, not trained on).
    """

    a: str  # clip file names inside clips/
    b: str
    winner: str | None = None
    segments: tuple[str | None, ...] | None = None
    aligned: dict[str, Any] | None = None  # how `dense-pairs` made it (source clip, eta, seeds), kept as written

    @property
    def name(self) -> str:
        return f"{self.a} vs {self.b}"

    @property
    def labels(self) -> tuple[str | None, ...]:
        """One label per segment; a pair labelled per clip is one segment labelled with its winner."""
        return self.segments if self.segments is not None else (self.winner,)

    @property
    def labelled(self) -> bool:
        return self.winner is not None or any(label is not None for label in self.segments or ())

    def clip_pair(self) -> Pair | None:
        """The clip-level preference, when the pair has a winner that is not a tie."""
        if self.winner not in ("a", "b"):
            return None
        return Pair(self.a, self.b) if self.winner == "a" else Pair(self.b, self.a)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b}
        if self.winner is not None:
            out["winner"] = self.winner
        if self.segments is not None:
            out["segments"] = list(self.segments)
        if self.aligned is not None:
            out["aligned"] = self.aligned
        return out


@dataclass(frozen=True)
class SegmentPair:
    """A pair as DenseDPO trains on it: the sign of each segment's label (`label_signs`)."""

    a: str
    b: str
    signs: tuple[int, ...]  # per segment: +1 a better, -1 b better, 0 no preference


def form_pairs(scores: dict[str, int], seed: int, explicit: Sequence[ExplicitPair] = (), min_gap: int = 1) -> list[Pair]:
    """Every pair of clips whose scores differ by `min_gap` or more (data.min_rating_gap), the
    higher-scored one the winner, plus the explicit pairs with a clip-level winner, shuffled
    together by `seed`.

    Equal scores never pair: a tie says nothing about preference (HuViDPO's published code treated
    the second clip of a tie as the winner).
    """
    names = sorted(scores)
    pairs = [
        Pair(a, b) if scores[a] > scores[b] else Pair(b, a)
        for a, b in itertools.combinations(names, 2)
        if abs(scores[a] - scores[b]) >= max(1, min_gap)
    ]
    pairs += [p for p in (e.clip_pair() for e in explicit) if p is not None]
    random.Random(seed).shuffle(pairs)
    return pairs


def segment_pairs(explicit: Sequence[ExplicitPair], frames: int, seed: int, per_latent: int = 1) -> list[SegmentPair]:
    """The explicit pairs DenseDPO can learn from, shuffled by `seed`.

    A pair's segment labels are used when any is given, else its winner as one segment covering
    the whole window of `frames` frames (`per_latent` video frames per latent frame, huvi.segments);
    pairs left with no non-zero sign (unlabelled, ties only) are dropped.
    """
    pairs = []
    for pair in explicit:
        labels = pair.segments if any(label is not None for label in pair.segments or ()) else (pair.winner,)
        signs = label_signs(labels, frames, per_latent)
        if any(signs):
            pairs.append(SegmentPair(pair.a, pair.b, signs))
    random.Random(seed).shuffle(pairs)
    return pairs


def split_pairs(pairs: list, holdout: float) -> tuple[list, list]:
    """(train, held_out): the first round(holdout * n) of the already shuffled pairs are held out.

    Held-out pairs share clips with training pairs; for a clean test, `evaluate` on another category.
    """
    if holdout <= 0 or len(pairs) < 2:
        return pairs, []
    n_out = min(max(1, round(holdout * len(pairs))), len(pairs) - 1)
    return pairs[n_out:], pairs[:n_out]
