"""Pure tensor functions of first-frame-conditioned training shared by every model family.

Latent videos are laid out `(b, c, f, h, w)`. Latent frame 0 is the condition: it enters the model
clean and is left out of every loss (HuViDPO, after LAMP). How a family noises a clip and what it
is trained to predict are its own (huvi.families).
"""

from __future__ import annotations

import torch


def per_sample_error(pred: torch.Tensor, target: torch.Tensor, frames: slice = slice(1, None)) -> torch.Tensor:
    """Mean squared error per sample over channels, the given frames, height and width.

    pred, target: (b, c, f, h, w) -> (b,). The default frame slice drops the clean frame 0.
    Computed in fp32 so bf16/fp16 predictions do not round the small DPO differences away.
    """
    diff = pred[:, :, frames].float() - target[:, :, frames].float()  # (b, c, f', h, w)
    return diff.pow(2).flatten(1).mean(dim=1)  # (b,)
