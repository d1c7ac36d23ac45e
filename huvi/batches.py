"""Which clips or pairs a training step sees, and their shared temporal crop and flip.

Everything here is a pure function of (seed, step): a resumed run sees exactly the batches an
uninterrupted one would, with nothing but the step number restored.
"""

from __future__ import annotations

import hashlib

import torch

from huvi.cache import ClipLatents


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (run seed, stage, step, micro-batch, process rank)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A fresh permutation of range(n) for each pass over the data."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, "epoch", epoch))).tolist()


def sample_indices(n: int, seed: int, position: int, count: int) -> list[int]:
    """Items `position .. position+count-1` of the endless stream of shuffled passes over range(n)."""
    out = []
    for p in range(position, position + count):
        epoch, offset = divmod(p, n)
        out.append(epoch_order(n, seed, epoch)[offset])
    return out


def crop_and_flip(group: list[ClipLatents], frames: int, crop: bool, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """The same random temporal window and flip for every clip of `group` (a DPO pair, or one clip).

    The window starts at the same fraction u of each clip's spare frames, so clips of different
    lengths are cut at the same relative moment. Returns (len(group), c, frames, h, w).
    """
    u = torch.rand((), generator=generator).item() if crop else 0.0
    mirrored = flip and torch.rand((), generator=generator).item() < 0.5
    out = []
    for clip in group:
        source = clip.flipped if mirrored else clip.latents  # (c, F, h, w)
        start = round(u * (source.shape[1] - frames))
        out.append(source[:, start : start + frames])
    return torch.stack(out)  # (k, c, frames, h, w)
