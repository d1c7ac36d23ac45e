"""Gradient checkpointing of the AnimateDiff motion modules, which diffusers leaves out.

diffusers' `UNetMotionModel.enable_gradient_checkpointing()` (0.42) recomputes the ResNets and
the spatial transformer blocks in backward, but its down and up blocks call their motion modules
(`AnimateDiffTransformer3D`) plainly, so every temporal attention and feed-forward activation is
kept for backward: 18 of the 21 GiB kept in a sd15-24gb DPO step (2 clips x 16 frames at 512x320,
`python -m huvi.bench --estimate`). `checkpoint_motion_modules` makes those modules follow the
same switch; the mid block's motion module, which diffusers already checkpoints, is left alone.
"""

from __future__ import annotations

import functools

import torch
from diffusers import UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D


class CheckpointedMotionModule(AnimateDiffTransformer3D):
    """A motion module whose forward is recomputed in backward while `gradient_checkpointing` is on.

    The UNet's `enable_gradient_checkpointing()` sets that flag and `_gradient_checkpointing_func`
    on every submodule that has the attribute, this one included.
    """

    gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            # diffusers' checkpoint function passes positional arguments only
            return self._gradient_checkpointing_func(functools.partial(super().forward, **kwargs), hidden_states, *args)
        return super().forward(hidden_states, *args, **kwargs)


def checkpoint_motion_modules(unet: UNetMotionModel) -> None:
    """Let the down and up blocks' motion modules follow the UNet's gradient checkpointing.

    Only the class changes (to a subclass with the same layout), so parameter names, state dicts,
    LoRA targets and deep copies are as before; without checkpointing the forward is the same call.
    """
    for block in (*unet.down_blocks, *unet.up_blocks):
        for module in block.motion_modules:
            if type(module) is AnimateDiffTransformer3D:
                module.__class__ = CheckpointedMotionModule
