"""The SD1.5 family's LoRA file layouts and what an exported file says about its base model.

Key layouts; MODULE is a UNetMotionModel module path such as
`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`:

    diffusers     unet.MODULE.lora_A.weight (r, in[, kh, kw]) and unet.MODULE.lora_B.weight (out, r[, 1, 1]),
                  the peft LoraConfig (r, alpha, per-layer patterns) as JSON in metadata `lora_adapter_metadata`
    kohya         lora_unet_<MODULE with "." -> "_">.lora_down.weight / .lora_up.weight / .alpha (0-dim);
                  motion-module layers are left out: diffusers' kohya converter turns `motion_modules` into
                  `motion.modules` and drops them, and kohya naming has no convention for AnimateDiff's motion
                  modules (ComfyUI-AnimateDiff-Evolved takes them only as a motion LoRA: comfy-motion)
    comfy-motion  BLOCK.motion_modules.I.temporal_transformer.transformer_blocks.J.attention_blocks.{0,1}
                  .processor.{to_q,to_k,to_v,to_out}_lora.{down,up}.weight, the original AnimateDiff
                  MotionLoRA naming (attn1 -> attention_blocks.0, attn2 -> attention_blocks.1), scale baked
                  in because ComfyUI-AnimateDiff-Evolved ignores alpha; temporal attention only
"""

from __future__ import annotations

import re
from functools import partial

import torch

from huvi.config import ModelConfig
from huvi.families.base import ExportFormat, diffusers_format
from huvi.hub import hub_id
from huvi.lora import Lora, bake, down_up_alpha_tensors, share_alpha

# peft module path of a temporal attention projection, and its parts in the original AnimateDiff naming
_TEMPORAL_ATTENTION = re.compile(
    r"(?P<block>(?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(?P<module>\d+)"
    r"\.transformer_blocks\.(?P<block_index>\d+)\.attn(?P<attn>[12])\.(?P<proj>to_q|to_k|to_v|to_out\.0)"
)


def kohya_name(module: str) -> str:
    # down_blocks.0.resnets.1.conv1 -> lora_unet_down_blocks_0_resnets_1_conv1
    return "lora_unet_" + module.replace(".", "_")


def comfy_motion_name(module: str) -> str:
    # down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_out.0
    # -> down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_out_lora
    m = _TEMPORAL_ATTENTION.fullmatch(module)
    proj = m["proj"].removesuffix(".0")
    return (
        f"{m['block']}.motion_modules.{m['module']}.temporal_transformer.transformer_blocks.{m['block_index']}"
        f".attention_blocks.{int(m['attn']) - 1}.processor.{proj}_lora"
    )


def comfy_motion_tensors(lora: Lora) -> dict[str, torch.Tensor]:
    """Layers with their scale baked in (alpha == rank): ComfyUI-AnimateDiff-Evolved applies up @ down as is."""
    out = {}
    for module, layer in lora.items():
        name = comfy_motion_name(module)
        out[f"{name}.down.weight"] = layer.down  # (r, in)
        out[f"{name}.up.weight"] = layer.up  # (out, r)
    return out


EXPORT_FORMATS = {
    "diffusers": diffusers_format("unet"),
    "kohya": ExportFormat(
        carries=lambda module: ".motion_modules." not in module,
        prepare=share_alpha,
        tensors=partial(down_up_alpha_tensors, name=kohya_name),
        metadata=lambda lora: {},
        bakes_scale=False,
        implementation="https://github.com/Stability-AI/generative-models",
        left_out="the temporal (AnimateDiff motion-module) layers",
        reason=(
            "diffusers' kohya converter turns `motion_modules` into `motion.modules` and drops those keys, and kohya "
            "naming has no convention for AnimateDiff's motion modules (ComfyUI-AnimateDiff-Evolved takes them only "
            "as a motion LoRA); export --format comfy-motion for them"
        ),
    ),
    "comfy-motion": ExportFormat(
        carries=lambda module: _TEMPORAL_ATTENTION.fullmatch(module) is not None,
        prepare=bake,
        tensors=comfy_motion_tensors,
        metadata=lambda lora: {},
        bakes_scale=True,
        implementation="https://github.com/guoyww/AnimateDiff",
        left_out="every spatial (SD1.5 UNet) layer and every temporal layer other than the attention projections",
        reason=(
            "an AnimateDiff motion LoRA holds only the motion modules' to_q/to_k/to_v/to_out; "
            "export --format kohya for the spatial layers, or --format diffusers for everything"
        ),
    ),
}


def export_metadata(model: ModelConfig, fmt: str, adapters: str, baked: bool, category: str, prompt: str) -> dict[str, str]:
    """The SD1.5 family's part of an exported file's metadata (huvi.families.base.ModelFamily.export_metadata)."""
    tiny = model.source == "tiny"
    base, base_folder = ("huvi tiny random SD1.5-style UNet (huvi.families.sd15.tiny)", "") if tiny else hub_id(model.base, ModelConfig().base)
    motion_adapter, motion_folder = ("huvi tiny random motion adapter (huvi.families.sd15.tiny)", "") if tiny else hub_id(model.motion_adapter, ModelConfig().motion_adapter)
    description = (
        f"huvi {adapters} LoRA for AnimateDiff (SD1.5 UNet + motion adapter {motion_adapter}), {fmt} layout"
        f"{', scale baked into the up weights' if baked else ''}. Category: {category or 'not recorded'}."
    )
    meta = {
        "description": description,
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.prediction_type": "epsilon",
        "modelspec.tags": "animatediff,text-to-video,lora,diffusion-dpo,huvi",
        "modelspec.usage_hint": f"AnimateDiff video LoRA: apply with the motion adapter {motion_adapter}; prompt: {prompt}",
        "huvi.base_model": base,
        "huvi.base_model_folder": base_folder,
        "huvi.motion_adapter": motion_adapter,
        "huvi.motion_adapter_folder": motion_folder,
    }
    if fmt == "kohya":
        meta |= {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_sd_model_name": base}
    return meta
