"""Sparse-causal spatial self-attention, installed into a `UNetMotionModel` as a processor.

HuViDPO's variant: in every spatial self-attention (`attn1` of the SD1.5 transformer blocks), frame
i keeps its own queries and attends to the keys/values of frame 0 and frame i-1, concatenated along
the token axis; frame 0 (and frame 1, whose previous frame is frame 0) attends to frame 0 alone.
Temporal (motion-module) and cross attention keep their own processors.

The UNet folds frames into the batch, `(b f, n, c)`, so a processor cannot see the frame count. A
forward pre-hook on the UNet records it from the input `(b, c, f, h, w)` into a `FrameCount` that
every installed processor shares; any caller (trainer, diffusers pipeline) therefore just works.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

logger = logging.getLogger(__name__)

SPATIAL_SELF_ATTENTION = re.compile(r"(.*\.)?attentions\.\d+\.transformer_blocks\.\d+\.attn1\.processor")


@dataclass
class FrameCount:
    frames: int = 1


def sparse_causal_indices(frames: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key/value source frames for each query frame: (first, previous), both of shape (frames,).

    first is always 0; previous is max(i - 1, 0), so frames 0 and 1 see frame 0 twice, which is the
    same attention as seeing it once (duplicated keys split their softmax weight evenly).
    """
    first = torch.zeros(frames, dtype=torch.long, device=device)
    previous = (torch.arange(frames, device=device) - 1).clamp(min=0)
    return first, previous


def _xformers_attention():
    try:
        import xformers.ops
    except ImportError:
        return None
    return xformers.ops.memory_efficient_attention


class SparseCausalAttnProcessor:
    """Self-attention where frame i attends to frames {0, i-1} (see the module docstring)."""

    def __init__(self, frame_count: FrameCount, use_xformers: bool = False) -> None:
        self.frame_count = frame_count
        self.xformers = _xformers_attention() if use_xformers else None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("SparseCausalAttnProcessor is for unmasked self-attention (attn1) only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            bf, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(bf, c, h * w).transpose(1, 2)  # (b f, n, c)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        f = self.frame_count.frames
        bf, n, _ = hidden_states.shape
        if bf % f:
            raise RuntimeError(f"batch of {bf} frame-images is not a whole number of {f}-frame videos")
        b = bf // f

        query = attn.to_q(hidden_states)  # (b f, n, d)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        first, previous = sparse_causal_indices(f, hidden_states.device)
        key = key.unflatten(0, (b, f))  # (b, f, n, d)
        value = value.unflatten(0, (b, f))
        key = torch.cat([key[:, first], key[:, previous]], dim=2).flatten(0, 1)  # (b f, 2n, d)
        value = torch.cat([value[:, first], value[:, previous]], dim=2).flatten(0, 1)

        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query = query.unflatten(-1, (heads, head_dim))  # (b f, n, heads, hd)
        key = key.unflatten(-1, (heads, head_dim))  # (b f, 2n, heads, hd)
        value = value.unflatten(-1, (heads, head_dim))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.xformers is not None and query.is_cuda:
            out = self.xformers(query, key, value, scale=attn.scale)  # (b f, n, heads, hd)
        else:
            out = F.scaled_dot_product_attention(
                query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=attn.scale
            ).transpose(1, 2)  # (b f, n, heads, hd)
        hidden_states = out.flatten(2).to(query.dtype)  # (b f, n, d)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(bf, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class _RecordFrames:
    """UNet forward pre-hook that stores the input's frame count for the processors.

    An object rather than a closure, so `copy.deepcopy(unet)` gives the copy a hook that feeds the
    copy's processors (deepcopy shares one new FrameCount between them; a closure would keep
    updating the original's)."""

    def __init__(self, frame_count: FrameCount) -> None:
        self.frame_count = frame_count

    def __call__(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.frame_count.frames = sample.shape[2]  # sample: (b, c, f, h, w)


def set_spatial_attention(unet, mode: str, backend: str = "auto") -> None:
    """Install `mode` ("sparse_causal" or "full") in every spatial self-attention of `unet`.

    backend: "sdpa", "xformers" (CUDA only) or "auto" (xformers when importable and on CUDA).
    """
    for handle in getattr(unet, "_huvi_frame_hooks", []):
        handle.remove()
    unet._huvi_frame_hooks = []
    names = [name for name in unet.attn_processors if SPATIAL_SELF_ATTENTION.fullmatch(name)]
    if mode == "full":
        unet.set_attn_processor(dict(unet.attn_processors) | {n: AttnProcessor2_0() for n in names})
        return
    use_xformers = backend == "xformers" or (backend == "auto" and torch.cuda.is_available())
    if use_xformers and _xformers_attention() is None:
        if backend == "xformers":
            logger.warning("xformers is not installed; sparse-causal attention uses PyTorch SDPA.")
        use_xformers = False
    frame_count = FrameCount()
    processor = SparseCausalAttnProcessor(frame_count, use_xformers=use_xformers)
    unet.set_attn_processor(dict(unet.attn_processors) | {n: processor for n in names})
    unet._huvi_frame_hooks = [unet.register_forward_pre_hook(_RecordFrames(frame_count), with_kwargs=True)]
    logger.debug("sparse-causal attention in %d spatial self-attention layers (%s)", len(names), "xformers" if use_xformers else "sdpa")
