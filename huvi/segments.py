"""Segments of a clip pair for DenseDPO (Wu et al. 2025): which frames a segment covers, what its
label means, and denoising errors computed per segment.

A pair labelled with n segments splits the training window (the first `data.frames` frames, at
`data.stride`) into n equal runs of frames: segment k covers window frames
[k*F/n, (k+1)*F/n). Frame 0 is the clean condition and is in no segment's error, so segment 0
is one frame shorter (and empty when F/n == 1, in which case its label cannot count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A label says which clip of the pair is better: "a" (the first), "b" (the second) or "tie".
LABELS = ("a", "b", "tie")
SIGNS = {"a": 1, "b": -1, "tie": 0, None: 0}  # None: not labelled yet, which counts like a tie


def _segment_size(count: int, frames: int) -> int:
    if count < 1 or frames % count:
        raise ValueError(f"{count} segments do not divide {frames} frames")
    return frames // count


def segment_frames(count: int, frames: int) -> list[range]:
    """The window frames whose error makes up each of `count` segments of `frames` frames.

    `count` must divide `frames`; frame 0 (the condition) is left out of segment 0.
    """
    size = _segment_size(count, frames)
    return [range(max(1, k * size), (k + 1) * size) for k in range(count)]


def segment_spans(count: int, frames: int, stride: int) -> list[tuple[int, int]]:
    """Where each of `count` segments lies in a clip file, as source frames [start, end) (segment 0
    starts at frame 0, the condition): for drawing a timeline; divide by the file's fps for seconds.
    A clip read every `stride`-th frame has its training frame j at source frame j * stride."""
    size = _segment_size(count, frames) * stride
    return [(k * size, (k + 1) * size) for k in range(count)]


def label_signs(labels: Sequence[str | None], frames: int) -> tuple[int, ...]:
    """+1 where clip a is better, -1 where b is, 0 for a tie, an unlabelled segment, or a segment
    with no frame after frame 0 (nothing to compare there)."""
    spans = segment_frames(len(labels), frames)
    return tuple(SIGNS[label] if len(span) else 0 for label, span in zip(labels, spans))


def segment_masks(counts: Sequence[int], frames: int) -> torch.Tensor:
    """One row per segment of each pair, padded to the largest count: (pairs, max count, frames).

    masks[i, k, j] = 1 when window frame j belongs to segment k of pair i (never for frame 0);
    padding rows are all zero.
    """
    masks = torch.zeros(len(counts), max(counts), frames)
    for i, count in enumerate(counts):
        for k, span in enumerate(segment_frames(count, frames)):
            masks[i, k, span.start : span.stop] = 1.0
    return masks


def padded_signs(signs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Each pair's segment signs, padded with 0 (no label) to the longest: (pairs, max count)."""
    width = max(len(s) for s in signs)
    return torch.tensor([list(s) + [0] * (width - len(s)) for s in signs], dtype=torch.float32)


def frame_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample and frame over channels, height and width, in fp32.

    pred, target: (b, c, f, h, w) -> (b, f).
    """
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))  # (b, f)


def pool_segments(errors: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-segment error from per-frame errors: the mean over each segment's frames.

    errors: (..., f); masks: (..., s, f) -> (..., s). An empty segment (padding, or segment 0 of
    one frame) gets 0, and its sign must be 0.
    """
    sums = (masks * errors.unsqueeze(-2)).sum(dim=-1)  # (..., s)
    return sums / masks.sum(dim=-1).clamp(min=1.0)


def segment_errors(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """DenseDPO's per-segment denoising error e_{i,k} = mean over segment k's frames, channels,
    height and width of (pred - target)^2, for every sample i.

    pred, target: (b, c, f, h, w); masks: (b, s, f) from `segment_masks` -> (b, s). With one
    segment over frames 1..F-1 this is the clip-level per-sample error.
    """
    return pool_segments(frame_errors(pred, target), masks)


def orient(errors_a: torch.Tensor, errors_b: torch.Tensor, signs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(preferred, dispreferred) errors of every labelled segment, flattened: each (labelled,).

    errors_a, errors_b, signs: (n, s). Segments with sign 0 are left out, so they add nothing to a
    loss built from the result and get no gradient.
    """
    labelled = signs != 0
    a_better = signs[labelled] > 0
    a, b = errors_a[labelled], errors_b[labelled]
    return torch.where(a_better, a, b), torch.where(a_better, b, a)
