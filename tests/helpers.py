"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from huvi.config import HuviConfig, load_config, read_preset
from huvi.gpu_lock import busy_subject
from huvi.synthetic import moving_square
from huvi.video import write_clip

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUSY = busy_subject()  # how a refusal names what a running job occupies: "The GPU", or "This machine" without one
BUNNY = FIXTURES / "bigbuckbunny.mp4"  # 132 frames, 1280x720, 25 fps

# Steps of the shared tiny run: short, but enough to stop and resume inside each stage.
MOTION_STEPS = 3
DPO_STEPS = 3


def tiny_config(motion_steps: int = MOTION_STEPS, dpo_steps: int = DPO_STEPS) -> HuviConfig:
    """The tiny preset with short stages."""
    return load_config("tiny", {"motion": {"steps": motion_steps}, "dpo": {"steps": dpo_steps}})


# The GPU presets; tests/test_real_path.py runs each of them at the tiny preset's size.
GPU_PRESETS = ("sd15-12gb", "sd15-16gb", "sd15-24gb")


def at_tiny_size(motion_steps: int = 2, dpo_steps: int = 3) -> list[str]:
    """`--set` overrides that run a GPU preset on the CPU at the tiny preset's size: the tiny
    model, its clip size and frame count, a few steps with a checkpoint after each, two sampling
    steps, and bf16 (what `precision: auto` picks on a GPU; fp32 on a CPU). Everything else stays
    the preset's own: 8-bit AdamW, gradient checkpointing, sparse-causal attention, adapter targets,
    ranks and dropout, learning rates and beta."""
    tiny = read_preset("tiny")
    return [
        "model.source=tiny",
        *(f"data.{key}={value}" for key, value in tiny["data"].items()),
        f"motion.steps={motion_steps}",
        f"dpo.steps={dpo_steps}",
        "motion.checkpoint_every=1",
        "dpo.checkpoint_every=1",
        "generate.steps=2",
        "generate.first_frame.steps=2",
        "precision=bf16",
    ]


def distinct_score_pairs(scores: dict[str, int]) -> set[tuple[str, str]]:
    """(winner, loser) for every two clips with different scores, computed without huvi."""
    names = list(scores)
    out = set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if scores[a] != scores[b]:
                out.add((a, b) if scores[a] > scores[b] else (b, a))
    return out


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def wait_for(predicate, timeout: float = 180, what: str = "condition"):
    """Poll `predicate` every 50 ms until it returns something true; return that."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def folder_snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """relative path -> (bytes, mtime_ns) of every file under `root`."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def read_meta(root: Path) -> dict:
    return json.loads((Path(root) / "category.json").read_text())


def write_meta(root: Path, meta: dict) -> None:
    (Path(root) / "category.json").write_text(json.dumps(meta))


# ways to break a category ------------------------------------------------------------------------
def _first_clip(root: Path) -> str:
    return sorted(read_meta(root)["scores"])[0]


def _set_first_score(value):
    def mutate(root: Path) -> None:
        meta = read_meta(root)
        meta["scores"][_first_clip(root)] = value
        write_meta(root, meta)

    return mutate


def _missing_json(root: Path) -> None:
    (root / "category.json").unlink()


def _malformed_json(root: Path) -> None:
    (root / "category.json").write_text('{"prompt": "a square", "scores": {')


def keep_clips(root: Path, count: int) -> None:
    """Keep `count` clips (with at least two different scores), deleting the others and their ratings."""
    meta = read_meta(root)
    names = sorted(meta["scores"], key=lambda n: (meta["scores"][n], n))
    keep = names[: count - 1] + names[-1:]  # lowest ones plus the highest: two scores at least
    for name in names:
        if name not in keep:
            (root / "clips" / name).unlink()
    meta["scores"] = {n: meta["scores"][n] for n in keep}
    write_meta(root, meta)


def _all_equal(root: Path) -> None:
    meta = read_meta(root)
    meta["scores"] = {name: 3 for name in meta["scores"]}
    write_meta(root, meta)


def _rated_file_missing(root: Path) -> None:
    (root / "clips" / _first_clip(root)).unlink()


def _unreadable(root: Path) -> None:
    (root / "clips" / _first_clip(root)).write_text("this is a text file, not a video\n" * 20)


def _empty(root: Path) -> None:
    (root / "clips" / _first_clip(root)).write_bytes(b"")


def _too_short(root: Path) -> None:
    # 10 source frames at the tiny preset's stride 3 give 4 frames; 8 are needed.
    write_clip(root / "clips" / _first_clip(root), moving_square(1, seed=7, frames=10, size=32))


def _one_frame(root: Path) -> None:
    write_clip(root / "clips" / _first_clip(root), moving_square(1, seed=7, frames=1, size=32))


def truncate(path: Path) -> None:
    """Cut a file to half its length, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated(root: Path) -> None:
    truncate(root / "clips" / _first_clip(root))


@dataclass(frozen=True)
class BadCase:
    mutate: object  # (category root) -> None
    message: str  # a fragment the error message must contain: it names the problem
    decoding: bool = False  # only found by decoding the clips (check with a DataConfig, caching, training)


BAD_CASES: dict[str, BadCase] = {
    "missing_category_json": BadCase(_missing_json, "has no category.json"),
    "malformed_json": BadCase(_malformed_json, "is not valid JSON"),
    "three_clips": BadCase(lambda root: keep_clips(root, 3), "has 3 usable rated clips"),
    "all_scores_equal": BadCase(_all_equal, "have the same score"),
    "score_0": BadCase(_set_first_score(0), "score 0 is not a whole number from 1 to 5"),
    "score_6": BadCase(_set_first_score(6), "score 6 is not a whole number from 1 to 5"),
    "score_five_string": BadCase(_set_first_score("five"), "score 'five' is not a whole number"),
    "score_4_5": BadCase(_set_first_score(4.5), "score 4.5 is not a whole number"),
    "score_true": BadCase(_set_first_score(True), "score True is not a whole number"),
    "rated_file_missing": BadCase(_rated_file_missing, "rated in category.json but not found"),
    "unreadable_clip": BadCase(_unreadable, "could not be decoded as a video", decoding=True),
    "empty_clip": BadCase(_empty, "the file is empty", decoding=True),
    "too_short_clip": BadCase(_too_short, "only 4 frames at stride 3, but 8 are needed", decoding=True),
    "one_frame_clip": BadCase(_one_frame, "only 1 frame at stride 3, but 8 are needed", decoding=True),
    "truncated_clip": BadCase(_truncated, "could not be decoded as a video", decoding=True),
}


@dataclass(frozen=True)
class BadCategory:
    name: str
    root: Path
    message: str
    decoding: bool
