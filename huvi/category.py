"""A category: a folder with `category.json` and its clips in `clips/`.

    DIR/category.json   {"prompt": "a person playing guitar", "scores": {"a.mp4": 4, "b.mp4": 2}}
    DIR/clips/a.mp4 ...

`load_category` returns the validated category or raises the first problem as a HuviError;
`check_category` collects every problem (and, given a data config, decodes every clip).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from huvi.config import DataConfig
from huvi.errors import HuviError
from huvi.video import VIDEO_SUFFIXES, read_clip

logger = logging.getLogger(__name__)

MIN_CLIPS = 4
ADVISED_CLIPS = (8, 16)


@dataclass(frozen=True)
class Clip:
    name: str  # file name inside clips/
    path: Path
    score: int  # 1..5


@dataclass(frozen=True)
class Category:
    root: Path
    prompt: str
    clips: tuple[Clip, ...]

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def scores(self) -> dict[str, int]:
        return {clip.name: clip.score for clip in self.clips}


@dataclass(frozen=True)
class Problem:
    level: str  # "error" blocks training; "warning" does not
    message: str


def _valid_score(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5


def _structure(root: Path) -> tuple[str, dict, list[Problem]]:
    """Read category.json and compare it with clips/; returns (prompt, valid scores, problems)."""
    root = Path(root)
    meta = root / "category.json"
    if not root.is_dir():
        return "", {}, [Problem("error", f"{root} is not a folder; give the category's folder (the one holding category.json).")]
    if not meta.is_file():
        return "", {}, [Problem("error", f"{root.name} has no category.json; create one with a prompt and a score per clip.")]
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return "", {}, [Problem("error", f"{meta} is not valid JSON ({err}); fix it or recreate the category.")]
    if not isinstance(data, dict):
        return "", {}, [Problem("error", f"{meta} must hold an object with \"prompt\" and \"scores\".")]

    problems = []
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(Problem("error", f"{meta.name} needs a non-empty \"prompt\" describing the action."))
        prompt = ""
    raw_scores = data.get("scores", {})
    if not isinstance(raw_scores, dict):
        problems.append(Problem("error", f"\"scores\" in {meta.name} must map clip file names to ratings 1-5."))
        raw_scores = {}

    clip_dir = root / "clips"
    files = {p.name for p in clip_dir.iterdir() if p.is_file() and not p.name.startswith(".")} if clip_dir.is_dir() else set()
    scores = {}
    for name, value in sorted(raw_scores.items()):
        if not _valid_score(value):
            problems.append(Problem("error", f"{name}: score {value!r} is not a whole number from 1 to 5."))
        elif name not in files:
            problems.append(Problem("error", f"{name}: rated in category.json but not found in {clip_dir}."))
        elif Path(name).suffix.lower() not in VIDEO_SUFFIXES:
            problems.append(Problem("error", f"{name}: not a supported clip type ({', '.join(VIDEO_SUFFIXES)})."))
        else:
            scores[name] = value
    for name in sorted(files - set(raw_scores)):
        problems.append(Problem("warning", f"{name}: in clips/ but has no score, so it is not used; rate it 1-5."))

    if len(scores) < MIN_CLIPS:
        problems.append(Problem("error", f"{root.name} has {len(scores)} usable rated clips; add clips until there are at least {MIN_CLIPS} (8-16 works best)."))
    elif not ADVISED_CLIPS[0] <= len(scores) <= ADVISED_CLIPS[1]:
        problems.append(Problem("warning", f"{root.name} has {len(scores)} rated clips; the method is tuned for 8-16."))
    if scores and len(set(scores.values())) < 2:
        problems.append(Problem("error", f"All clips of {root.name} have the same score, so no preference pair can be formed; give at least two clips different ratings."))
    return prompt.strip(), scores, problems


def check_category(root: Path, data: DataConfig | None = None) -> list[Problem]:
    """Every problem of the category at `root`; with `data`, every rated clip is also decoded."""
    _, scores, problems = _structure(root)
    if data is not None:
        for name in scores:
            try:
                clip_frames(Path(root) / "clips" / name, data)
            except HuviError as err:
                problems.append(Problem("error", str(err)))
    return problems


def load_category(root: Path) -> Category:
    """The category at `root`, or a HuviError naming its first error (warnings are logged)."""
    root = Path(root)
    prompt, scores, problems = _structure(root)
    errors = [p for p in problems if p.level == "error"]
    for problem in problems:
        if problem.level == "warning":
            logger.warning(problem.message)
    if errors:
        raise first_problem([p.message for p in errors], root)
    clips = tuple(Clip(name, root / "clips" / name, score) for name, score in sorted(scores.items()))
    return Category(root=root, prompt=prompt, clips=clips)


def first_problem(messages: list[str], root: Path) -> HuviError:
    """One sentence for a list of problems: the first, and how to see the rest."""
    more = f" ({len(messages) - 1} more problems: run `python -m huvi check --category {root}`)" if len(messages) > 1 else ""
    return HuviError(messages[0].rstrip(".") + more + ".")


def clip_frames(path: Path, data: DataConfig):
    """The clip's strided, fitted frames (f, h, w, 3) uint8, refusing clips shorter than data.frames."""
    frames = read_clip(path, data.width, data.height, stride=data.stride, max_frames=data.max_cached_frames)
    if len(frames) < data.frames:
        raise HuviError(
            f"{Path(path).name}: only {len(frames)} frames at stride {data.stride}, but {data.frames} are needed; "
            f"use a clip of at least {data.frames * data.stride} frames or lower data.stride."
        )
    return frames
