"""Preference pairs from 1-5 ratings (HuViDPO: random pairs of differently rated clips)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    winner: str  # clip file name with the higher score
    loser: str


def form_pairs(scores: dict[str, int], seed: int) -> list[Pair]:
    """Every pair of clips with different scores, the higher-scored one the winner, shuffled by `seed`.

    Equal scores never pair: a tie says nothing about preference (HuViDPO's published code treated
    the second clip of a tie as the winner).
    """
    names = sorted(scores)
    pairs = [
        Pair(a, b) if scores[a] > scores[b] else Pair(b, a)
        for a, b in itertools.combinations(names, 2)
        if scores[a] != scores[b]
    ]
    random.Random(seed).shuffle(pairs)
    return pairs


def split_pairs(pairs: list[Pair], holdout: float) -> tuple[list[Pair], list[Pair]]:
    """(train, held_out): the first round(holdout * n) of the already shuffled pairs are held out.

    Held-out pairs share clips with training pairs; for a clean test, `evaluate` on another category.
    """
    if holdout <= 0 or len(pairs) < 2:
        return pairs, []
    n_out = min(max(1, round(holdout * len(pairs))), len(pairs) - 1)
    return pairs[n_out:], pairs[:n_out]

