"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from huvi.config import PAIR_SETTINGS, HuviConfig, load_config, read_preset
from huvi.gpu_lock import busy_subject
from huvi.io import write_safetensors
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


# The GPU presets; tests/test_real_path.py runs each sd15 one at the tiny preset's size,
# tests/test_wan_real_path.py each wan one at the wan-tiny preset's size.
GPU_PRESETS = ("sd15-12gb", "sd15-16gb", "sd15-24gb")
WAN_GPU_PRESETS = ("wan21-1.3b", "wan22-5b")


def at_tiny_size(motion_steps: int = 2, dpo_steps: int = 3, tiny_preset: str = "tiny") -> list[str]:
    """`--set` overrides that run a GPU preset on the CPU at the size of its family's tiny preset
    (`tiny_preset`): the tiny model, its clip size and frame count, a few steps with a checkpoint
    after each, two sampling steps, and bf16 (what `precision: auto` picks on a GPU; fp32 on a CPU).
    Everything else stays the preset's own: 8-bit AdamW, gradient checkpointing, its attention,
    adapter targets, ranks and dropout, learning rates and beta, and how its pairs form."""
    tiny = read_preset(tiny_preset)
    return [
        "model.source=tiny",
        *(f"data.{key}={value}" for key, value in tiny["data"].items() if key not in PAIR_SETTINGS),
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


def rewrite_adapter(path: Path, change: Callable[[str, torch.Tensor], torch.Tensor | None]) -> None:
    """Rewrite an adapter file (metadata kept) with each tensor replaced by change(key, tensor); None drops it."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = {key: change(key, value) for key, value in load_file(str(path)).items()}
    write_safetensors(path, {k: v for k, v in tensors.items() if v is not None}, metadata=meta)


def run_to_export(cfg: HuviConfig, category: Path, root: Path, prompt: str, noise: float) -> Path:
    """A run of `cfg` at `root` for the export tests: trained on `category`, each adapter's up weights then
    moved by `noise` x N(0, 1) (a step or two leaves them near zero; this makes every layer's update
    clearly non-zero), and run.json as the trainer writes it, with `prompt` and 9 pairs."""
    from huvi.adapters import DPO, MOTION
    from huvi.runs import Run
    from huvi.trainer import train

    train(cfg, category, root, show_progress=False)
    g = torch.Generator().manual_seed(0)
    for name in (MOTION, DPO):
        rewrite_adapter(Run(root).adapter_path(name), lambda k, v: v + noise * torch.randn(v.shape, generator=g) if "lora_B" in k else v)
    (root / "run.json").write_text(json.dumps({"category": str(category), "prompt": prompt, "pairs": 9}))
    return root


def export_every_format(run_dir: Path, root: Path) -> dict:
    """(format, merge) -> huvi.export.ExportResult for each of the run's formats, merged and not, each in its own folder."""
    from huvi.export import export_run, run_formats

    return {
        (fmt, merge): export_run(run_dir, fmt, root / f"{fmt}-{merge}" / "squares.safetensors", merge=merge)
        for fmt in run_formats(run_dir)
        for merge in (False, True)
    }


def exported_files(exports: dict) -> list[tuple[str, bool, Path, dict[str, str]]]:
    """(format, merge, file, its metadata) of every file of `export_every_format`'s exports; each export wrote
    one file merged and two without, and every metadata key and value is a string."""
    found = []
    for (fmt, merge), result in exports.items():
        assert len(result.files) == (1 if merge else 2)
        for path in result.files:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata()
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
            found.append((fmt, merge, path, meta))
    return found


def folder_snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """relative path -> (bytes, mtime_ns) of every file under `root`."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def read_meta(root: Path) -> dict:
    return json.loads((Path(root) / "category.json").read_text())


def write_meta(root: Path, meta: dict) -> None:
    (Path(root) / "category.json").write_text(json.dumps(meta))


def clip_names(root: Path) -> list[str]:
    """The rated clips of the category at `root`, in name order."""
    return sorted(read_meta(root)["scores"])


def with_pairs(root: Path, pairs: list) -> None:
    """Replace the category's "pairs" in category.json with `pairs`, as written by hand."""
    meta = read_meta(root)
    meta["pairs"] = pairs
    write_meta(root, meta)


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
    # 10 source frames at the tiny preset's stride 1 give 10 frames; 24 are needed.
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
    "too_short_clip": BadCase(_too_short, "only 10 frames at stride 1, but 24 are needed", decoding=True),
    "one_frame_clip": BadCase(_one_frame, "only 1 frame at stride 1, but 24 are needed", decoding=True),
    "truncated_clip": BadCase(_truncated, "could not be decoded as a video", decoding=True),
}


@dataclass(frozen=True)
class BadCategory:
    name: str
    root: Path
    message: str
    decoding: bool
