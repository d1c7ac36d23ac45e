"""Quality figures of a generated clip, as the HuViDPO paper reports them.

Temporal consistency: SSIM and MSE between consecutive frames (higher SSIM, lower MSE = smoother).
Text alignment: CLIP score, 100 * max(cos(image, text), 0) averaged over frames (Hessel et al.
2021), computed only when a CLIP model is on this machine; it is never downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from huvi.errors import HuviError

logger = logging.getLogger(__name__)

CLIP_MODEL = "openai/clip-vit-large-patch14"  # the CLIP the HuViDPO/LAMP evaluations use
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (K1 L)^2, (K2 L)^2 with K1 = 0.01, K2 = 0.03, L = 1


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, eq. 13) with an 11x11 Gaussian window (sigma 1.5),
    per channel, averaged over pixels and channels. a, b: (n, c, h, w) in [0, 1] -> (n,).
    Frames smaller than the window use a window as large as the frame."""
    size = min(11, a.shape[-1], a.shape[-2])
    c = a.shape[1]
    g = _gaussian(size).to(a)
    rows, cols = g.view(1, 1, size, 1).expand(c, 1, size, 1), g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(x: torch.Tensor) -> torch.Tensor:  # the separable 2-D Gaussian: a column pass, then a row pass
        return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).flatten(1).mean(dim=1)


def temporal_consistency(frames: np.ndarray, batch: int = 8) -> dict[str, float]:
    """Mean SSIM and MSE of consecutive frames, `batch` pairs at a time. frames: (f, h, w, 3) uint8,
    f >= 2. MSE is on pixel values scaled to [0, 1]."""
    if len(frames) < 2:
        raise HuviError("Temporal consistency needs a clip of at least 2 frames.")
    ssims, mses = [], []
    for start in range(0, len(frames) - 1, batch):
        chunk = np.ascontiguousarray(frames[start : start + batch + 1])
        x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float() / 255  # (n + 1, 3, h, w)
        prev, nxt = x[:-1], x[1:]
        ssims.append(ssim(prev, nxt))
        mses.append((prev - nxt).pow(2).flatten(1).mean(dim=1))
    return {"ssim": float(torch.cat(ssims).mean()), "mse": float(torch.cat(mses).mean())}


@dataclass
class ClipScorer:
    model: torch.nn.Module
    processor: object

    @classmethod
    def load_local(cls, name: str = CLIP_MODEL) -> ClipScorer | None:
        """The CLIP model from the local Hugging Face cache or a folder, or None when absent."""
        from transformers import CLIPModel, CLIPProcessor

        try:
            model = CLIPModel.from_pretrained(name, local_files_only=True).eval()
            processor = CLIPProcessor.from_pretrained(name, local_files_only=True)
        except (OSError, ValueError):
            return None
        return cls(model, processor)

    @torch.no_grad()
    def score(self, frames: np.ndarray, prompt: str) -> float:
        """CLIP score of `prompt` against each frame, averaged: 100 * max(cos, 0)."""
        inputs = self.processor(text=[prompt], images=list(frames), return_tensors="pt", padding=True, truncation=True)
        image = F.normalize(self.model.get_image_features(pixel_values=inputs["pixel_values"]), dim=-1)  # (f, d)
        text = F.normalize(self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]), dim=-1)  # (1, d)
        return float((100 * (image @ text.T).clamp(min=0)).mean())


def video_metrics(path: Path, frames: np.ndarray, prompt: str | None, scorer: ClipScorer | None) -> dict:
    """One JSON-ready row of figures for a decoded clip."""
    row = {"video": str(path), "frames": len(frames), **{k: round(v, 6) for k, v in temporal_consistency(frames).items()}}
    if prompt is None:
        row["clip_score"] = None
        row["clip_score_note"] = "no --prompt given"
    elif scorer is None:
        row["clip_score"] = None
        row["clip_score_note"] = f"CLIP model {CLIP_MODEL} is not on this machine; fetch it with `hf download {CLIP_MODEL}` to get CLIP scores"
    else:
        row["clip_score"] = round(scorer.score(frames, prompt), 4)
    return row
