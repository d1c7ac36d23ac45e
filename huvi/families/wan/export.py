"""The Wan family's LoRA file layouts and what an exported file says about its base model.

Key layouts; MODULE is a WanTransformer3DModel module path such as `blocks.0.attn1.to_q`:

    diffusers  transformer.MODULE.lora_A.weight (r, in) and transformer.MODULE.lora_B.weight (out, r), the
               peft LoraConfig (r, alpha, per-layer patterns) as JSON in metadata `lora_adapter_metadata`:
               what `WanPipeline.load_lora_weights` reads
    comfy      diffusion_model.blocks.N.LAYER.lora_down.weight (r, in) / .lora_up.weight (out, r) / .alpha
               (0-dim), LAYER in the original Wan naming (Wan-Video's wan/modules/model.py, which ComfyUI's
               comfy/ldm/wan/model.py keeps): self_attn.{q,k,v,o}, cross_attn.{q,k,v,o}, ffn.0, ffn.2.
               ComfyUI's Load LoRA maps each `diffusion_model.X` to the model weight `diffusion_model.X.weight`
               and scales by alpha / rank; diffusers reads the same file through
               `_convert_non_diffusers_wan_lora_to_diffusers`, alpha included
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

from huvi.config import ModelConfig
from huvi.families.base import ExportFormat, diffusers_format
from huvi.hub import hub_id
from huvi.lora import down_up_alpha_tensors

# diffusers' layer names inside a block -> the original Wan names (diffusers' own single-file converter,
# convert_wan_transformer_to_diffusers, renames the other way)
_ATTENTIONS = {"attn1": "self_attn", "attn2": "cross_attn"}
_PROJECTIONS = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
ORIGINAL_LAYERS = {f"{a}.{p}": f"{wa}.{wp}" for a, wa in _ATTENTIONS.items() for p, wp in _PROJECTIONS.items()} | {
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_BLOCK_LAYER = re.compile(r"blocks\.(?P<block>\d+)\.(?P<layer>.+)")

# The wan presets' models: a local folder that names no Hub model is said to hold the one of its Wan version.
HUB_IDS = {"2.1": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "2.2": "Wan-AI/Wan2.2-TI2V-5B-Diffusers"}
_WAN22_NAME = re.compile(r"wan[-_. ]?2[._]?2", re.IGNORECASE)  # Wan2.2, wan22, wan2_2
TINY_NAME = "huvi tiny random Wan transformer (huvi.families.wan.tiny)"


def comfy_carries(module: str) -> bool:
    m = _BLOCK_LAYER.fullmatch(module)
    return m is not None and m["layer"] in ORIGINAL_LAYERS


def comfy_name(module: str) -> str:
    # blocks.3.attn2.to_out.0 -> diffusion_model.blocks.3.cross_attn.o; blocks.0.ffn.net.0.proj -> diffusion_model.blocks.0.ffn.0
    m = _BLOCK_LAYER.fullmatch(module)
    return f"diffusion_model.blocks.{m['block']}.{ORIGINAL_LAYERS[m['layer']]}"


EXPORT_FORMATS = {
    "diffusers": diffusers_format("transformer"),
    "comfy": ExportFormat(
        carries=comfy_carries,
        prepare=lambda lora: lora,  # every layer keeps its own alpha: ComfyUI and diffusers' converter read it
        tensors=partial(down_up_alpha_tensors, name=comfy_name),
        metadata=lambda lora: {},
        bakes_scale=False,
        implementation="https://github.com/Wan-Video/Wan2.1",  # Wan 2.2's code keeps these module names
        left_out="any layer outside the transformer blocks' attention and feed-forward projections (the Wan presets' targets train none)",
        reason="the original Wan names are mapped for those layers only; export --format diffusers for any other",
    ),
}


def wan_version(source: str) -> str:
    """"2.2" or "2.1" for a model.base setting: 2.2 when the Hub id or folder names Wan 2.2, or the folder's
    model_index.json sets what only Wan 2.2's pipelines set (`expand_timesteps` for TI2V-5B, a
    `boundary_ratio` for the two-expert A14B models); 2.1 otherwise."""
    if _WAN22_NAME.search(source):
        return "2.2"
    index = Path(source).expanduser() / "model_index.json"
    if index.is_file():
        pipeline = json.loads(index.read_text())
        if pipeline.get("expand_timesteps") or pipeline.get("boundary_ratio") is not None:
            return "2.2"
    return "2.1"


def export_metadata(model: ModelConfig, fmt: str, adapters: str, baked: bool, category: str, prompt: str) -> dict[str, str]:
    """The Wan family's part of an exported file's metadata (huvi.families.base.ModelFamily.export_metadata).

    modelspec.architecture follows kohya's musubi-tuner, the commonest writer of Wan LoRAs ("wan2.1/lora"),
    with the version of the base model; a tiny run counts as its real counterpart in model.base."""
    version = wan_version(model.base)
    base, folder = (TINY_NAME, "") if model.source == "tiny" else hub_id(model.base, HUB_IDS[version])
    description = (
        f"huvi {adapters} LoRA for Wan {version} ({base}), {fmt} layout"
        f"{', scale baked into the up weights' if baked else ''}. Category: {category or 'not recorded'}."
    )
    return {
        "description": description,
        "modelspec.architecture": f"wan{version}/lora",
        "modelspec.tags": "wan,text-to-video,lora,diffusion-dpo,flow-dpo,huvi",
        "modelspec.usage_hint": f"Wan {version} video LoRA for {base}; prompt: {prompt}",
        "huvi.wan_version": version,
        "huvi.base_model": base,
        "huvi.base_model_folder": folder,
    }
