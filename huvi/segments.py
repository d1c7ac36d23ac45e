"""Segments of a clip pair for DenseDPO (Wu et al. 2025): which frames a segment covers, what its
label means, and denoising errors computed per segment.

A pair labelled with n segments splits the training window (the first `data.frames` frames F, at
`data.stride`) into n equal runs of whole latent frames, the frames the model denoises. Latent
frame 0 is video frame 0 alone; every later one covers `per_latent` video frames, the family's
`frames_per_latent` (1 for SD1.5, 4 for Wan's causal VAE: latent frame j >= 1 is video frames
4j-3..4j):

    per_latent 1   the runs split all F frames: segment k is frames [k*F/n, (k+1)*F/n)
    per_latent > 1 latent frame 0 is shorter than the rest, so the runs split the L - 1 latent
                   frames after it (L = 1 + (F - 1) // per_latent) and latent frame 0 joins
                   segment 0: segment k is video frames 1 + [k*(F-1)/n, (k+1)*(F-1)/n)

n must divide the latent frames the runs split (F, or L - 1): a boundary inside a latent frame
would give its one error to two labels, so a count that puts one there is refused, not rounded
(Wan at 33 frames: 1, 2, 4 or 8 segments). Latent frame 0 is the clean condition and is in no
segment's error, so without temporal compression segment 0 is one frame shorter (and empty when
F/n == 1, in which case its label cannot count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A label says which clip of the pair is better: "a" (the first), "b" (the second) or "tie".
LABELS = ("a", "b", "tie")
SIGNS = {"a": 1, "b": -1, "tie": 0, None: 0}  # None: not labelled yet, which counts like a tie


def latent_count(frames: int, per_latent: int = 1) -> int:
    """Latent frames of `frames` video frames: frame 0 alone, then one per `per_latent` frames
    (the last (frames - 1) % per_latent frames are left out, as the VAE leaves them)."""
    return 1 + (frames - 1) // per_latent


def _split(frames: int, per_latent: int) -> tuple[int, int]:
    """(first, steps): segments split latent frames first .. first + steps - 1 into equal runs.
    Latent frame 0 counts as one of them only without temporal compression, where it is as long
    as the others."""
    first = 0 if per_latent == 1 else 1
    return first, latent_count(frames, per_latent) - first


def segment_counts(frames: int, per_latent: int = 1) -> list[int]:
    """Every segment count a window of `frames` frames can be labelled with (ascending)."""
    steps = _split(frames, per_latent)[1]
    return [n for n in range(1, steps + 1) if steps % n == 0]


def split_frames(frames: int, per_latent: int = 1) -> int:
    """How many of the window's video frames the segments split: F, or the F - 1 (whole latent
    frames) after frame 0 with temporal compression."""
    return _split(frames, per_latent)[1] * per_latent


def count_choices(frames: int, per_latent: int = 1) -> str:
    """The segment counts a window can be labelled with, in words: "1, 2, 4 or 8"."""
    counts = [str(n) for n in segment_counts(frames, per_latent)]
    return " or ".join(filter(None, [", ".join(counts[:-1]), counts[-1]]))


def what_segments_split(frames: int, per_latent: int = 1) -> str:
    """The frames the segments split, in words, for messages."""
    if per_latent == 1:
        return f"the {frames} training frames"
    return f"the {split_frames(frames, per_latent)} training frames after frame 0 into whole latent frames of {per_latent}"


def default_count(frames: int, segment_frames: int, per_latent: int = 1) -> int | None:
    """Segments of `segment_frames` video frames each over the window, or None when they do not
    split it into whole latent frames."""
    count, rest = divmod(split_frames(frames, per_latent), segment_frames)
    return count if not rest and count in segment_counts(frames, per_latent) else None


def segment_latents(count: int, frames: int, per_latent: int = 1) -> list[range]:
    """The latent frames of each of `count` segments, latent frame 0 in segment 0."""
    first, steps = _split(frames, per_latent)
    if count < 1 or steps % count:
        raise ValueError(f"{count} segments do not divide {what_segments_split(frames, per_latent)}")
    size = steps // count
    return [range(0 if k == 0 else first + k * size, first + (k + 1) * size) for k in range(count)]


def segment_frames(count: int, frames: int, per_latent: int = 1) -> list[range]:
    """The latent frames whose error makes up each of `count` segments of a `frames`-frame window;
    latent frame 0 (the condition) is left out of segment 0."""
    return [range(max(1, span.start), span.stop) for span in segment_latents(count, frames, per_latent)]


def segment_spans(count: int, frames: int, stride: int, per_latent: int = 1) -> list[tuple[int, int]]:
    """Where each of `count` segments lies in a clip file, as source frames [start, end) (segment 0
    starts at frame 0, the condition): for drawing a timeline; divide by the file's fps for seconds.
    Latent frame j >= 1 is video frames per_latent*(j-1)+1 .. per_latent*j, and a clip read every
    `stride`-th frame has its video frame i at source frame i * stride."""
    spans = segment_latents(count, frames, per_latent)
    ends = [per_latent * (span.stop - 1) + 1 for span in spans]  # one past each segment's last video frame
    return [(start * stride, end * stride) for start, end in zip([0, *ends[:-1]], ends)]


def label_signs(labels: Sequence[str | None], frames: int, per_latent: int = 1) -> tuple[int, ...]:
    """+1 where clip a is better, -1 where b is, 0 for a tie, an unlabelled segment, or a segment
    with no latent frame after latent frame 0 (nothing to compare there)."""
    spans = segment_frames(len(labels), frames, per_latent)
    return tuple(SIGNS[label] if len(span) else 0 for label, span in zip(labels, spans))


def segment_masks(counts: Sequence[int], frames: int, per_latent: int = 1) -> torch.Tensor:
    """One row per segment of each pair, padded to the largest count: (pairs, max count, latent frames).

    masks[i, k, j] = 1 when latent frame j belongs to segment k of pair i (never for latent frame 0);
    padding rows are all zero.
    """
    masks = torch.zeros(len(counts), max(counts), latent_count(frames, per_latent))
    for i, count in enumerate(counts):
        for k, span in enumerate(segment_frames(count, frames, per_latent)):
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
