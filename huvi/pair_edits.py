"""Editing a category's explicit pairs in category.json: add one, label it (per clip or per
segment), remove it. Each edit is atomic and validated against the category's clips
(`huvi.category.edit_meta`, `huvi.category.validated_pair`), so a half-written or invalid pair
never reaches the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from huvi.category import edit_meta, validated_pair
from huvi.errors import HuviError
from huvi.pairs import ExplicitPair


def _entries(data: dict) -> list:
    entries = data.setdefault("pairs", [])
    if not isinstance(entries, list):
        raise HuviError("\"pairs\" in category.json is not a list; fix it by hand before adding pairs.")
    return entries


def _index(entries: list, a: str, b: str) -> int:
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and (entry.get("a"), entry.get("b")) == (a, b):
            return i
    raise HuviError(f"There is no pair with a = {a} and b = {b} in category.json; refresh the list of pairs.")


def add_pair(root: Path, pair: ExplicitPair) -> None:
    """Append `pair` to the category's "pairs"; refuses a pair of the same two clips."""
    pair = validated_pair(pair.to_json(), "the new pair", root)

    def change(data: dict) -> None:
        entries = _entries(data)
        if any(isinstance(e, dict) and {e.get("a"), e.get("b")} == {pair.a, pair.b} for e in entries):
            raise HuviError(f"{pair.name} is already a pair of {Path(root).name}; label that one instead.")
        entries.append(pair.to_json())

    edit_meta(root, change)


def label_pair(root: Path, a: str, b: str, segments: Sequence[str | None] | None = None, winner: str | None = None) -> ExplicitPair:
    """Replace the labels of pair (a, b) with `segments` and `winner` (None removes that label).

    A pair that already has segment labels keeps its segment count.
    """

    def change(data: dict) -> ExplicitPair:
        entries = _entries(data)
        i = _index(entries, a, b)
        entry = {k: v for k, v in entries[i].items() if k not in ("winner", "segments")}
        old = entries[i].get("segments")
        if segments is not None and isinstance(old, list) and len(old) != len(segments):
            raise HuviError(f"Pair {a} vs {b} has {len(old)} segments; give {len(old)} labels, not {len(segments)}.")
        if winner is not None:
            entry["winner"] = winner
        if segments is not None:
            entry["segments"] = list(segments)
        pair = validated_pair(entry, f"pair {i + 1}", root)
        entries[i] = pair.to_json()
        return pair

    return edit_meta(root, change)


def label_segment(root: Path, a: str, b: str, index: int, label: str | None) -> ExplicitPair:
    """Set the label of segment `index` (0-based) of pair (a, b), leaving its other labels as
    they are on disk; a pair labelled per clip takes index 0 as its winner."""

    def change(data: dict) -> ExplicitPair:
        entries = _entries(data)
        i = _index(entries, a, b)
        entry = dict(entries[i])
        if isinstance(entry.get("segments"), list):
            if not 0 <= index < len(entry["segments"]):
                raise HuviError(f"Pair {a} vs {b} has {len(entry['segments'])} segments; there is no segment {index + 1}.")
            entry["segments"] = [label if k == index else old for k, old in enumerate(entry["segments"])]
        elif index == 0:
            entry.pop("winner", None)
            if label is not None:
                entry["winner"] = label
        else:
            raise HuviError(f"Pair {a} vs {b} is labelled as a whole clip; there is no segment {index + 1}.")
        pair = validated_pair(entry, f"pair {i + 1}", root)
        entries[i] = pair.to_json()
        return pair

    return edit_meta(root, change)


def remove_pair(root: Path, a: str, b: str) -> None:
    """Delete pair (a, b) from category.json (its clips stay in clips/)."""
    edit_meta(root, lambda data: _entries(data).pop(_index(_entries(data), a, b)))
