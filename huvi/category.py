"""A category: a folder with `category.json` and its clips in `clips/`.

    DIR/category.json   {"prompt": "a person playing guitar", "scores": {"a.mp4": 4, "b.mp4": 2},
                         "pairs": [{"a": "c.mp4", "b": "d.mp4", "segments": ["a", "tie", "b", null]},
                                   {"a": "e.mp4", "b": "f.mp4", "winner": "b"}]}
    DIR/clips/a.mp4 ...

"pairs" is optional: explicit preference pairs (`huvi.pairs.ExplicitPair`), labelled per clip
("winner") or per segment ("segments", DenseDPO; `huvi.segments` says which frames a segment
covers). Labels are "a", "b" or "tie"; a segment label may be null (not labelled yet), and a pair
with no label at all is kept but not trained on. `dense-pairs` also writes an "aligned" object
saying how it made the pair.

`load_category` returns the validated category or raises the first problem as a HuviError;
`check_category` collects every problem (and, given a data config, decodes every clip and checks
each pair's frame counts and segment count). Every edit goes through `edit_meta`, atomically;
`huvi.pair_edits` adds, labels and removes pairs with it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huvi.config import DataConfig
from huvi.errors import HuviError
from huvi.io import file_digest, file_lock, write_json
from huvi.pairs import ExplicitPair
from huvi.segments import LABELS, count_choices, segment_counts, what_segments_split
from huvi.video import VIDEO_SUFFIXES, read_clip

logger = logging.getLogger(__name__)

MIN_CLIPS = 4
ADVISED_CLIPS = (8, 16)


PAIR_KEYS = ("a", "b", "winner", "segments", "aligned")
_edit_lock = threading.Lock()  # one read-modify-write of a category.json at a time in this process


@dataclass(frozen=True)
class Clip:
    name: str  # file name inside clips/
    path: Path
    score: int | None  # 1..5; None for a clip used only by explicit pairs


@dataclass(frozen=True)
class Category:
    root: Path
    prompt: str
    clips: tuple[Clip, ...]  # every clip the category uses: rated, or in an explicit pair
    pairs: tuple[ExplicitPair, ...] = ()

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def scores(self) -> dict[str, int]:
        """The rated clips' scores (what the motion stage and rating pairs use)."""
        return {clip.name: clip.score for clip in self.clips if clip.score is not None}


@dataclass(frozen=True)
class Problem:
    level: str  # "error" blocks training; "warning" does not
    message: str


def valid_score(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5


@dataclass
class _Parsed:
    prompt: str = ""
    scores: dict[str, int] = field(default_factory=dict)
    pairs: list[ExplicitPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def clip_names(self) -> list[str]:
        """Rated clips and the clips of explicit pairs, sorted."""
        return sorted(set(self.scores) | {n for p in self.pairs for n in (p.a, p.b)})


def _read_meta(meta: Path) -> tuple[dict | None, Problem | None]:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, Problem("error", f"{meta} is not valid JSON ({err}); fix it or recreate the category.")
    if not isinstance(data, dict):
        return None, Problem("error", f"{meta} must hold an object with \"prompt\" and \"scores\"; fix it or recreate the category.")
    return data, None


def _clip_files(clip_dir: Path) -> set[str]:
    return {p.name for p in clip_dir.iterdir() if p.is_file() and not p.name.startswith(".")} if clip_dir.is_dir() else set()


def _clip_problem(name: str, files: set[str], clip_dir: Path) -> str | None:
    if name not in files:
        return f"not found in {clip_dir}"
    if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
        return f"not a supported clip type ({', '.join(VIDEO_SUFFIXES)})"
    return None


def _parse_pair(entry: Any, where: str, files: set[str], clip_dir: Path) -> tuple[ExplicitPair | None, list[str]]:
    """One "pairs" entry as an ExplicitPair, or None and the sentences saying what is wrong.

    `where` names the entry ("pair 3"); both clips must be among `files`, the names in `clip_dir`.
    """
    if not isinstance(entry, dict):
        return None, [f"{where} must be an object with \"a\" and \"b\" clip names and a \"winner\" or \"segments\" label."]
    a, b = entry.get("a"), entry.get("b")
    if not (isinstance(a, str) and a and isinstance(b, str) and b):
        return None, [f"{where} needs the file names of its two clips in \"a\" and \"b\"."]
    where = f"{where} ({a} vs {b})"
    errors = [f"{where}: unknown key {key!r}; a pair holds {', '.join(PAIR_KEYS)}." for key in entry if key not in PAIR_KEYS]
    if a == b:
        errors.append(f"{where}: a clip cannot be paired with itself; name two different clips.")
    errors += [f"{where}: {name} is {problem}." for name in (a, b) if (problem := _clip_problem(name, files, clip_dir))]
    winner = entry.get("winner")
    if winner is not None and winner not in LABELS:
        errors.append(f"{where}: winner {winner!r} is unknown; use \"a\", \"b\" or \"tie\".")
    segments = entry.get("segments")
    if segments is not None:
        if not isinstance(segments, list) or not segments:
            errors.append(f"{where}: \"segments\" must be a list with one label per segment (\"a\", \"b\", \"tie\" or null).")
        else:
            errors += [
                f"{where}: segment {k + 1} label {label!r} is unknown; use \"a\", \"b\", \"tie\" or null (not labelled yet)."
                for k, label in enumerate(segments)
                if label is not None and label not in LABELS
            ]
    aligned = entry.get("aligned")
    if aligned is not None and not isinstance(aligned, dict):
        errors.append(f"{where}: \"aligned\" must be an object (dense-pairs writes it); remove it or restore it.")
    if errors:
        return None, errors
    return ExplicitPair(a, b, winner, tuple(segments) if segments is not None else None, aligned), []


def _parse_pairs(raw: Any, meta_name: str, files: set[str], clip_dir: Path) -> tuple[list[ExplicitPair], list[Problem]]:
    if not isinstance(raw, list):
        return [], [Problem("error", f"\"pairs\" in {meta_name} must be a list of {{\"a\": ..., \"b\": ..., \"winner\" or \"segments\": ...}} objects.")]
    pairs, problems, seen = [], [], {}
    for i, entry in enumerate(raw, start=1):
        pair, errors = _parse_pair(entry, f"pair {i}", files, clip_dir)
        problems += [Problem("error", message) for message in errors]
        if pair is None:
            continue
        key = frozenset((pair.a, pair.b))
        if key in seen:
            problems.append(Problem("error", f"pair {i} ({pair.name}) repeats pair {seen[key]}; keep one of them."))
            continue
        seen[key] = i
        if not pair.labelled:
            problems.append(Problem("warning", f"pair {i} ({pair.name}) has no label yet, so it is not trained on; label it."))
        pairs.append(pair)
    return pairs, problems


def _structure(root: Path) -> _Parsed:
    """Read category.json and compare it with clips/: the valid scores and pairs, and every problem."""
    root = Path(root)
    meta = root / "category.json"
    if not root.is_dir():
        return _Parsed(problems=[Problem("error", f"{root} is not a folder; give the category's folder (the one holding category.json).")])
    if not meta.is_file():
        return _Parsed(problems=[Problem("error", f"{root.name} has no category.json; create one with a prompt and a score per clip.")])
    data, problem = _read_meta(meta)
    if data is None:
        return _Parsed(problems=[problem])

    parsed = _Parsed()
    problems = parsed.problems
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(Problem("error", f"{meta.name} needs a non-empty \"prompt\" describing the action."))
        prompt = ""
    parsed.prompt = prompt.strip()
    raw_scores = data.get("scores", {})
    if not isinstance(raw_scores, dict):
        problems.append(Problem("error", f"\"scores\" in {meta.name} must map clip file names to ratings 1-5."))
        raw_scores = {}

    clip_dir = root / "clips"
    files = _clip_files(clip_dir)
    scores = parsed.scores
    for name, value in sorted(raw_scores.items()):
        if not valid_score(value):
            problems.append(Problem("error", f"{name}: score {value!r} is not a whole number from 1 to 5; rate it again in the app or fix category.json."))
        elif name not in files:
            problems.append(Problem("error", f"{name}: rated in category.json but not found in {clip_dir}; put the file back or remove its rating."))
        elif problem := _clip_problem(name, files, clip_dir):
            problems.append(Problem("error", f"{name}: {problem}."))
        else:
            scores[name] = value
    parsed.pairs, pair_problems = _parse_pairs(data.get("pairs", []), meta.name, files, clip_dir)
    problems += pair_problems
    unrated = sorted(files - set(raw_scores) - set(parsed.clip_names()))
    for name in unrated:
        problems.append(Problem("warning", f"{name}: in clips/ but has no score, so it is not used; rate it 1-5."))

    if len(scores) < MIN_CLIPS:
        missing = MIN_CLIPS - len(scores)
        if len(unrated) >= missing:  # the clips are there, only their ratings are missing
            todo = f"rate at least {missing} more of its {len(unrated)} unrated clips 1-5 (the app's Rate tab, or \"scores\" in category.json)"
        else:
            todo = f"add clips and rate them until at least {MIN_CLIPS} are rated"
        problems.append(Problem("error", f"{root.name} has {len(scores)} usable rated clips; {todo} (8-16 works best)."))
    elif not ADVISED_CLIPS[0] <= len(scores) <= ADVISED_CLIPS[1]:
        problems.append(Problem("warning", f"{root.name} has {len(scores)} rated clips; the method is tuned for 8-16."))
    if scores and len(set(scores.values())) < 2 and not any(p.labelled for p in parsed.pairs):
        problems.append(Problem("error", f"All clips of {root.name} have the same score, so no preference pair can be formed; give at least two clips different ratings."))
    return parsed


def pair_length_problems(pairs: Sequence[ExplicitPair], lengths: dict[str, int], data: DataConfig, per_latent: int = 1) -> list[str]:
    """What stops segment-labelled pairs from training: clips of different lengths (frames kept at
    data.stride, up to data.max_cached_frames), or a segment count that does not split data.frames
    into whole latent frames (`per_latent` video frames each after frame 0, huvi.segments)."""
    messages = []
    for pair in pairs:
        if pair.segments is None:
            continue
        count = len(pair.segments)
        if count not in segment_counts(data.frames, per_latent):
            messages.append(
                f"pair {pair.name}: {count} segment labels do not divide {what_segments_split(data.frames, per_latent)}; "
                f"give {count_choices(data.frames, per_latent)} labels."
            )
        if pair.a in lengths and pair.b in lengths and lengths[pair.a] != lengths[pair.b]:
            messages.append(
                f"pair {pair.name}: frame counts differ ({lengths[pair.a]} and {lengths[pair.b]} at stride {data.stride}); "
                f"the clips of a segment-labelled pair must be equally long, as dense-pairs makes them."
            )
    return messages


def check_pair_lengths(category: Category, lengths: dict[str, int], data: DataConfig, per_latent: int = 1) -> None:
    """Raise the first of `pair_length_problems` as a HuviError; lengths: clip name -> frames kept."""
    if problems := pair_length_problems(category.pairs, lengths, data, per_latent):
        raise first_problem(problems, category.root)


def check_category(root: Path, data: DataConfig | None = None, per_latent: int = 1, min_gap: int = 1) -> list[Problem]:
    """Every problem of the category at `root`, its ratings paired at data.min_rating_gap (`min_gap`
    without `data`); with `data`, every clip it uses is also decoded, clips that are the same file
    are named, and each segment-labelled pair's frame counts and segment count are checked
    (`per_latent`: the model family's frames per latent frame)."""
    parsed = _structure(root)
    problems = parsed.problems
    if data is not None:
        lengths, first_of = {}, {}
        for name in parsed.clip_names():
            path = Path(root) / "clips" / name
            try:
                lengths[name] = len(clip_frames(path, data))
            except HuviError as err:
                problems.append(Problem("error", str(err)))
                continue
            digest = file_digest(path)
            if digest in first_of:
                problems.append(Problem("warning", f"{name} is the same file as {first_of[digest]}; remove one of them (a clip compared with itself teaches nothing)."))
            first_of.setdefault(digest, name)
        problems += [Problem("error", message) for message in pair_length_problems(parsed.pairs, lengths, data, per_latent)]
    if gap := rating_gap_problem(Path(root).name, parsed.scores, parsed.pairs, data.min_rating_gap if data is not None else min_gap):
        problems.append(gap)
    return problems


def rating_gap_problem(name: str, scores: dict[str, int], pairs: Sequence[ExplicitPair], min_gap: int) -> Problem | None:
    """Ratings that differ, but never by data.min_rating_gap: no pair forms (equal ratings are
    `_structure`'s error)."""
    if min_gap <= 1 or len(set(scores.values())) < 2 or max(scores.values()) - min(scores.values()) >= min_gap or any(p.labelled for p in pairs):
        return None
    return Problem("error", (
        f"No two clips of {name} are rated {min_gap} or more apart, so no preference pair forms at data.min_rating_gap {min_gap}; "
        "rate the best and the worst clips further apart, or set data.min_rating_gap to 1."
    ))  # fmt: skip


def load_category(root: Path) -> Category:
    """The category at `root`, or a HuviError naming its first error (warnings are logged)."""
    root = Path(root)
    parsed = _structure(root)
    errors = [p for p in parsed.problems if p.level == "error"]
    for problem in parsed.problems:
        if problem.level == "warning":
            logger.warning(problem.message)
    if errors:
        raise first_problem([p.message for p in errors], root)
    clips = tuple(Clip(name, root / "clips" / name, parsed.scores.get(name)) for name in parsed.clip_names())
    return Category(root=root, prompt=parsed.prompt, clips=clips, pairs=tuple(parsed.pairs))


def first_problem(messages: list[str], root: Path) -> HuviError:
    """One sentence for a list of problems: the first, and how to see the rest."""
    more = f" ({len(messages) - 1} more problems: run `python -m huvi check --category {root}`)" if len(messages) > 1 else ""
    return HuviError(messages[0].rstrip(".") + more + ".")


def clip_frames(path: Path, data: DataConfig):
    """The clip's strided, fitted frames (f, h, w, 3) uint8, refusing clips shorter than data.frames."""
    frames = read_clip(path, data.width, data.height, stride=data.stride, max_frames=data.max_cached_frames)
    if len(frames) < data.frames:
        source = (len(frames) - 1) * data.stride + 1  # at least this many frames are in the file
        stride = (source - 1) // (data.frames - 1)  # the largest stride that still keeps data.frames of them
        smaller = (
            f", or train with data.stride={stride} (`--set data.stride={stride}`, or that line under the Train tab's Advanced settings)"
            if 1 <= stride < data.stride
            else ""
        )
        raise HuviError(
            f"{Path(path).name}: only {len(frames)} frame{'s' if len(frames) != 1 else ''} at stride {data.stride}, but {data.frames} are needed; "
            f"use a clip of at least {data.frames * data.stride} frames{smaller}."
        )
    return frames


# editing the pairs -----------------------------------------------------------------------------------
def read_pairs(root: Path) -> list[ExplicitPair]:
    """The category's well-formed explicit pairs, in file order, even when other parts of the
    category have problems (`check_category` lists those)."""
    return _structure(root).pairs


def read_meta(root: Path) -> dict:
    """category.json as a dict with at least "prompt" and "scores", for editing (`check_category`
    validates the content); a HuviError when it is missing or not a JSON object."""
    meta = Path(root) / "category.json"
    if not meta.is_file():
        raise HuviError(f"{Path(root).name} has no category.json; create the category in the app or by hand.")
    data, problem = _read_meta(meta)
    if problem is not None:
        raise HuviError(problem.message)
    if not isinstance(data.get("scores", {}), dict):
        raise HuviError(f"\"scores\" in {meta} is not an object; fix it by hand before editing it here.")
    data.setdefault("prompt", "")
    data.setdefault("scores", {})
    return data


def edit_meta(root: Path, change: Callable[[dict], Any]) -> Any:
    """Apply `change` to category.json's content and write it back atomically; returns its result.

    Every edit of a category (a rating, a label, a new pair, the prompt) goes through here, under
    one lock, so two edits at the same time never overwrite each other.
    """
    if not (Path(root) / "category.json").is_file():
        raise HuviError(f"{Path(root).name} has no category.json; create the category in the app or by hand.")
    with _edit_lock, file_lock(Path(root) / ".category.lock"):  # this process's threads, then other processes
        data = read_meta(root)
        result = change(data)
        write_json(Path(root) / "category.json", data)
        return result


def validated_pair(entry: dict, where: str, root: Path) -> ExplicitPair:
    """`entry` (one element of "pairs") as an ExplicitPair of the category at `root`, or a HuviError
    naming its first problem (`where` says which entry)."""
    clip_dir = Path(root) / "clips"
    pair, errors = _parse_pair(entry, where, _clip_files(clip_dir), clip_dir)
    if pair is None:
        raise HuviError(errors[0])
    return pair


def drop_clip(data: dict, name: str) -> None:
    """Remove clip `name`'s rating and every explicit pair naming it from category.json's content."""
    data["scores"].pop(name, None)
    if isinstance(data.get("pairs"), list):
        data["pairs"] = [e for e in data["pairs"] if not (isinstance(e, dict) and name in (e.get("a"), e.get("b")))]
