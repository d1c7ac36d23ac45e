"""The app's folders: categories under HUVI_HOME, run folders beside them, and edits to a category.

    $HUVI_HOME/                     default ./data
      <category>/category.json      {"prompt": ..., "scores": {"a.mp4": 4, ...}}  (huvi.category)
      <category>/clips/a.mp4 ...
    $HUVI_RUNS/                     default: `runs` beside HUVI_HOME (./runs for ./data)
      <run>/ ...                    (huvi.runs)

Every edit (new category, added or removed clip, a rating, the prompt) rewrites category.json
atomically (huvi.io), so the folder stays a valid input for `python -m huvi train` at every moment.
An uploaded clip is decoded before it is copied in: a file that would fail training never enters.
What the app shows about a category is read here too: each clip's frame count and size
(`clip_info`, decoded once per file version) and the preference pairs a run with a given seed
trains on (`preference_pairs`, the trainer's own `form_pairs`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import shutil
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from huvi.category import Problem, check_category, clip_frames, drop_clip, edit_meta, read_meta, read_pairs, valid_score
from huvi.config import DataConfig
from huvi.errors import HuviError
from huvi.io import atomic_write, file_digest, publish_dir, write_json
from huvi.pairs import form_pairs
from huvi.video import VIDEO_SUFFIXES, read_clip

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"  # the shipped synthetic category (data/README.md)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # category and run folder names
MAX_CLIP_BYTES = 500 * 2**20  # per clip added; app.py gives Gradio's uploads the same limit


def check_name(name: str, what: str = "category") -> str:
    """`name` stripped, if it is a safe folder name; otherwise a HuviError suggesting one."""
    name = (name or "").strip()
    if NAME.fullmatch(name):
        return name
    suggestion = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:64] or f"my-{what}"
    raise HuviError(
        f"{what.capitalize()} name {name!r} is not allowed: use letters, digits, '-' and '_' "
        f"(up to 64, starting with a letter or digit), e.g. {suggestion!r}."
    )


def safe_name(name: str, what: str = "category") -> str:
    """`name` as a safe folder name: accents dropped, every run of other characters than letters,
    digits, '-' and '_' turned into one '-', at most 64 characters ("My Bunny Clips" ->
    "My-Bunny-Clips"). A name that looks like a path ('/', '\\', a leading '.') or keeps no letter or
    digit is refused with a HuviError."""
    name = (name or "").strip()
    if "/" in name or "\\" in name or name.startswith("."):
        check_name(name, what)  # raises, with a suggestion
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-_")[:64].rstrip("-_")
    if not safe:
        raise HuviError(f"{what.capitalize()} name {name!r} has no letter or digit to make a folder name of; type a name such as 'horse-running'.")
    return check_name(safe, what)


@dataclass(frozen=True)
class Workspace:
    categories: Path  # HUVI_HOME: one folder per category
    runs: Path  # run folders

    @classmethod
    def from_env(cls) -> Workspace:
        home = Path(os.environ.get("HUVI_HOME") or "data").expanduser().resolve()
        runs = Path(os.environ.get("HUVI_RUNS") or home.parent / "runs").expanduser().resolve()
        return cls(home, runs)

    def prepare(self) -> None:
        """Create both folders; copy the shipped demo category in when HUVI_HOME has none."""
        self.categories.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        target = self.categories / DEMO.name
        if DEMO.is_dir() and not target.exists() and target.resolve() != DEMO.resolve():
            tmp = target.with_name(f".{target.name}.tmp")  # copied whole or not at all
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(DEMO, tmp)
            publish_dir(tmp, target)
            logger.info("copied the demo category to %s", target)

    def category_dir(self, name: str) -> Path:
        return self.categories / check_name(name)

    def existing_category(self, name: str | None) -> Path:
        """The folder of category `name`, which must hold a category.json; else a HuviError."""
        if not name:
            raise HuviError("Pick a category first, or create one.")
        root = self.category_dir(name)
        if not (root / "category.json").is_file():
            raise HuviError(f"There is no category {name!r} in {self.categories}; refresh the list.")
        return root

    def run_dir(self, name: str) -> Path:
        return self.runs / check_name(name, "run")

    def list_categories(self) -> list[str]:
        """Category folder names (those holding category.json), demo first, then alphabetical."""
        if not self.categories.is_dir():
            return []
        names = [p.name for p in self.categories.iterdir() if (p / "category.json").is_file() and NAME.fullmatch(p.name)]
        return sorted(names, key=lambda n: (n != DEMO.name, n.lower()))

    def list_runs(self) -> list[str]:
        """Run folder names, most recently changed first."""
        if not self.runs.is_dir():
            return []
        found = [p for p in self.runs.iterdir() if p.is_dir() and NAME.fullmatch(p.name) and any(p.iterdir())]
        return [p.name for p in sorted(found, key=_last_change, reverse=True)]

    def new_run_name(self, category: str) -> str:
        """`<category>-<YYYYmmdd-HHMMSS>`, unused in the runs folder."""
        base = f"{check_name(category)[:48]}-{time.strftime('%Y%m%d-%H%M%S')}"
        name, n = base, 2
        while (self.runs / name).exists():
            name, n = f"{base}-{n}", n + 1
        return name

    def create_category(self, name: str, prompt: str) -> Path:
        """A new category folder named `safe_name(name)` (compare its name with `name` to tell the user)."""
        root = self.categories / safe_name(name)
        if root.exists():
            raise HuviError(f"A category named {root.name!r} already exists; pick it in the list or choose another name.")
        prompt = _check_prompt(prompt)
        (root / "clips").mkdir(parents=True)
        write_json(root / "category.json", {"prompt": prompt, "scores": {}})
        logger.info("created category %s", root)
        return root


def _last_change(path: Path) -> float:
    stamps = [path.stat().st_mtime] + [p.stat().st_mtime for p in (path / "job.json", path / "metrics.jsonl") if p.is_file()]
    return max(stamps)


def _check_prompt(prompt: str) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise HuviError("Give the category a prompt describing the action, e.g. 'a person playing guitar'.")
    return prompt


# one category ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipInfo:
    frames: int  # counted by decoding every frame, never from container metadata
    width: int  # as stored, before any preset resizes it
    height: int

    def __str__(self) -> str:
        return f"{self.frames} frames · {self.width}×{self.height}"


@dataclass(frozen=True)
class ClipEntry:
    name: str  # file name in clips/
    path: Path
    score: int | None  # None: not rated yet, so not used for training
    paired: bool = False  # named by an explicit pair of category.json (e.g. an aligned pair for DenseDPO)
    generated: bool = False  # made by `dense-pairs` (a clip of an aligned pair): labelled per segment, never rated

    @property
    def info(self) -> ClipInfo:
        """Frame count and size; decoded once per file version. A HuviError when it does not decode."""
        return clip_info(self.path)


def clip_info(path: Path) -> ClipInfo:
    """Frame count and size of the clip at `path`, by decoding it (cached while the file is unchanged)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise HuviError(f"{path.name}: file not found.") from None
    return _decode_info(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _decode_info(path: str, size: int, mtime_ns: int) -> ClipInfo:
    """Keyed by size and mtime too: clips are replaced atomically, so a new version is a new key."""
    _, height, width, _ = read_clip(Path(path), None, None, max_frames=1).shape  # (1, h, w, 3) as stored, or why it fails
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(path)  # ffmpeg decodes every frame itself; no frame crosses a pipe
    except RuntimeError:
        frames = len(read_clip(Path(path), 8, 8))  # slower: every frame through imageio, shrunk as it is decoded
    return ClipInfo(frames, width, height)


def list_clips(root: Path) -> list[ClipEntry]:
    """Every file in clips/ with its rating (None when unrated), whether a pair names it and whether
    `dense-pairs` made it, by name."""
    clip_dir = Path(root) / "clips"
    scores = read_meta(root)["scores"]
    pairs = read_pairs(root)
    paired = {name for pair in pairs for name in (pair.a, pair.b)}
    generated = {name for pair in pairs if pair.aligned for name in (pair.a, pair.b)}
    files = sorted(p for p in clip_dir.iterdir() if p.is_file() and not p.name.startswith(".")) if clip_dir.is_dir() else []
    return [
        ClipEntry(p.name, p, scores.get(p.name) if valid_score(scores.get(p.name)) else None, p.name in paired, p.name in generated)
        for p in files
    ]


def source_clips(root: Path) -> list[ClipEntry]:
    """The clips people supplied (every clip but those `dense-pairs` made): what the Rate tab
    rates and the 8-16 advice counts."""
    return [entry for entry in list_clips(root) if not entry.generated]


def set_prompt(root: Path, prompt: str) -> None:
    prompt = _check_prompt(prompt)
    edit_meta(root, lambda meta: meta.update(prompt=prompt))


def _check_score(score) -> int:
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not valid_score(score):
        raise HuviError(f"A rating must be a whole number from 1 to 5, not {score!r}.")
    return score


def _clip_path(root: Path, name: str) -> Path:
    """clips/`name`, if `name` is the plain file name of a clip there."""
    path = Path(root) / "clips" / name
    if Path(name).name != name or name.startswith(".") or not path.is_file():
        raise HuviError(f"{name} is not a clip of {Path(root).name}; refresh the list.")
    return path


def set_score(root: Path, name: str, score: int | None) -> None:
    """Rate clip `name` 1-5, or clear its rating with None (an unrated clip is not trained on)."""
    _clip_path(root, name)
    score = None if score is None else _check_score(score)

    def change(meta: dict) -> None:
        if score is None:
            meta["scores"].pop(name, None)
        else:
            meta["scores"][name] = score

    edit_meta(root, change)


def remove_clip(root: Path, name: str) -> None:
    """Delete clip `name`, its rating and the explicit pairs naming it."""
    path = _clip_path(root, name)
    edit_meta(root, lambda meta: drop_clip(meta, name))
    path.unlink()
    logger.info("removed %s from %s", name, Path(root).name)


def safe_clip_name(filename: str) -> str:
    """An upload's file name reduced to letters, digits, '.', '-' and '_', with a lower-case suffix."""
    path = Path(Path(filename).name)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._-") or "clip"
    return f"{stem[:80]}{path.suffix.lower()}"


def check_clip(source: Path, data: DataConfig | None = None, filename: str | None = None) -> int:
    """The number of frames training keeps of the clip at `source` (given `data`; without it only
    the first frames are decoded), or a HuviError saying why the clip cannot be added: its type, its
    size, decoding or its length. `filename` is the name the user gave the file (an upload's
    temporary path may be named otherwise).
    """
    source = Path(source)
    shown = Path(filename or source.name).name
    if Path(safe_clip_name(shown)).suffix not in VIDEO_SUFFIXES:
        raise HuviError(f"{shown}: not a supported clip type; use {', '.join(VIDEO_SUFFIXES)}.")
    if source.is_file() and source.stat().st_size > MAX_CLIP_BYTES:
        raise HuviError(
            f"{shown}: {source.stat().st_size / 2**20:.1f} MB is over the {MAX_CLIP_BYTES / 2**20:g} MB limit per clip; "
            "trim it or re-encode it smaller (training keeps a few seconds at a few hundred pixels)."
        )
    frames = clip_frames(source, data) if data is not None else read_clip(source, 64, 64, max_frames=2)
    return len(frames)


def add_clip(root: Path, source: Path, score: int | None = None, data: DataConfig | None = None, filename: str | None = None) -> str:
    """Copy the clip at `source` into the category, optionally rated; returns its name in clips/.

    The clip is checked first (`check_clip`: with `data`, every frame the preset keeps is decoded and
    a clip too short for it is refused), so a file that would fail training is refused here with one
    sentence and nothing is written. `filename` is the name the user gave the file.
    """
    root, source = Path(root), Path(source)
    name = safe_clip_name(filename or source.name)
    score = None if score is None else _check_score(score)
    read_meta(root)  # the category must be editable before anything is copied
    kept = check_clip(source, data, filename)
    logger.debug("%s decodes (%d frames kept)", name, kept)

    clip_dir = root / "clips"
    clip_dir.mkdir(exist_ok=True)
    same_size = [p for p in clip_dir.iterdir() if p.is_file() and p.stat().st_size == source.stat().st_size]
    if same_size:
        digest = file_digest(source)
        for existing in same_size:
            if file_digest(existing) == digest:
                raise HuviError(f"{Path(filename or source.name).name} is already in {root.name} as {existing.name}; it was not added again.")
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while (clip_dir / name).exists():
        name, n = f"{stem}_{n}{suffix}", n + 1
    atomic_write(clip_dir / name, lambda tmp: shutil.copyfile(source, tmp))
    if score is not None:
        set_score(root, name, score)
    logger.info("added %s to %s", name, root.name)
    return name


@dataclass(frozen=True)
class Summary:
    clips: int  # files in clips/ that people supplied (not those `dense-pairs` made)
    rated: int
    histogram: dict[int, int]  # score -> clips with it
    pairs: int  # preference pairs the ratings form
    problems: list[Problem]  # structural problems (no decoding)

    @property
    def ready(self) -> bool:
        return not any(p.level == "error" for p in self.problems)


@dataclass(frozen=True)
class PairRow:
    winner: str
    loser: str
    winner_score: int | None  # None: an explicit pair of category.json with an unrated clip
    loser_score: int | None


@dataclass(frozen=True)
class PairsView:
    """The preference pairs a run with `seed` trains on, in its order, and the clips left out."""

    seed: int
    pairs: list[PairRow]  # in training order (huvi.pairs.form_pairs with this seed)
    unrated: list[str]  # no rating and in no explicit pair: not trained on
    ties: dict[int, list[str]]  # rating -> the clips sharing it (two or more): they never pair with each other
    unpaired: list[str]  # rated, but every other rated clip has the same rating (or one too close): in no pair at all
    min_gap: int = 1  # data.min_rating_gap
    close: int = 0  # clip combinations left out because their ratings differ by less than min_gap

    @property
    def tied_combinations(self) -> int:
        """Clip combinations left out because both clips have the same rating."""
        return sum(len(names) * (len(names) - 1) // 2 for names in self.ties.values())


def preference_pairs(root: Path, seed: int, min_gap: int = 1) -> PairsView:
    """The pairs `form_pairs` makes from the category's ratings (and explicit pairs) with `seed`
    and data.min_rating_gap `min_gap`."""
    entries = list_clips(root)
    scores = {e.name: e.score for e in entries if e.score is not None}
    pairs = form_pairs(scores, seed, read_pairs(root), min_gap)
    rows = [PairRow(p.winner, p.loser, scores.get(p.winner), scores.get(p.loser)) for p in pairs]
    in_pairs = {name for p in pairs for name in (p.winner, p.loser)}
    ties = {s: sorted(n for n, v in scores.items() if v == s) for s in sorted(set(scores.values()), reverse=True)}
    return PairsView(
        seed=seed,
        pairs=rows,
        unrated=[e.name for e in entries if e.score is None and not e.paired],  # a paired clip needs no rating
        ties={s: names for s, names in ties.items() if len(names) > 1},
        unpaired=sorted(set(scores) - in_pairs),
        min_gap=min_gap,
        close=sum(0 < abs(a - b) < min_gap for a, b in itertools.combinations(scores.values(), 2)),
    )


def summarize(root: Path, min_gap: int = 1) -> Summary:
    """Counts and structural problems of a category, its pairs formed at data.min_rating_gap
    `min_gap`; cheap enough to recompute on every edit."""
    entries = list_clips(root)
    scores = {e.name: e.score for e in entries if e.score is not None}
    histogram = {s: sum(v == s for v in scores.values()) for s in range(1, 6)}
    pairs = len(form_pairs(scores, 0, min_gap=min_gap))
    return Summary(sum(not e.generated for e in entries), len(scores), histogram, pairs, check_category(root, min_gap=min_gap))
