"""LoRA layers as files hold them, the exact arithmetic of combining them, and the two key layouts
other tools read (huvi.export; each family names its modules for them):

    peft/diffusers  PREFIX.MODULE.lora_A.weight (r, in[, kh, kw]), PREFIX.MODULE.lora_B.weight (out, r[, 1, 1]),
                    the LoraConfig as JSON in metadata `lora_adapter_metadata` (`load_lora_weights`)
    down/up/alpha   NAME.lora_down.weight, NAME.lora_up.weight, NAME.alpha (0-dim; scale = alpha / rank):
                    kohya's and ComfyUI's
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from huvi.adapters import read_adapter_config
from huvi.config import AdapterConfig


@dataclass(frozen=True)
class LoraLayer:
    """One LoRA layer; it adds (alpha / rank) * up @ down to the layer's weight."""

    down: torch.Tensor  # peft lora_A: (r, in) or, for a conv, (r, in, kh, kw)
    up: torch.Tensor  # peft lora_B: (out, r) or, for a conv, (out, r, 1, 1)
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def baked(self) -> LoraLayer:
        """The same update with the scale in the up weights (alpha = rank: scale 1)."""
        return LoraLayer(self.down, self.up * (self.alpha / self.rank), float(self.rank))


Lora = dict[str, LoraLayer]  # module path -> layer


def read_lora(path: Path) -> tuple[AdapterConfig, Lora, dict[str, str]]:
    """Settings, layers and metadata of an adapter file written by `huvi.adapters.save_adapter`."""
    cfg = read_adapter_config(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(path))  # MODULE.lora_A.weight, MODULE.lora_B.weight
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in tensors})
    layers = {m: LoraLayer(tensors[f"{m}.lora_A.weight"], tensors[f"{m}.lora_B.weight"], float(cfg.alpha)) for m in modules}
    return cfg, layers, meta


def merge_loras(first: Lora, second: Lora) -> Lora:
    """One LoRA whose update is exactly first's plus second's: scales baked into the up weights,
    layers in both concatenated along the rank axis."""
    merged = {}
    for module in sorted(first.keys() | second.keys()):
        parts = [lora[module].baked() for lora in (first, second) if module in lora]
        down = torch.cat([p.down for p in parts], dim=0)  # (r1 + r2, in[, kh, kw])
        up = torch.cat([p.up for p in parts], dim=1)  # (out, r1 + r2[, 1, 1])
        merged[module] = LoraLayer(down, up, float(down.shape[0]))
    return merged


def bake(lora: Lora) -> Lora:
    return {module: layer.baked() for module, layer in lora.items()}


def share_alpha(lora: Lora) -> Lora:
    """The same updates with one alpha for every layer (the commonest), the others' up weights rescaled.

    A merged LoRA has a different rank and alpha per layer, and diffusers' kohya converter names the
    alphas of attention layers `...processor.to_q_lora.down.weight.alpha`, which match no module, so
    it would load those layers with the commonest alpha instead of their own.
    """
    alpha = Counter(layer.alpha for layer in lora.values()).most_common(1)[0][0]
    return {m: LoraLayer(layer.down, layer.up * (layer.alpha / alpha), alpha) for m, layer in lora.items()}


def peft_config(lora: Lora) -> dict:
    """peft LoraConfig arguments that rebuild exactly these layers: the commonest rank and alpha,
    the others per layer (`^module` patterns, as diffusers writes them)."""
    ranks = {m: layer.rank for m, layer in lora.items()}
    alphas = {m: layer.alpha for m, layer in lora.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(lora),
        "rank_pattern": {f"^{m}": r for m, r in ranks.items() if r != rank},
        "alpha_pattern": {f"^{m}": a for m, a in alphas.items() if a != alpha},
    }


def diffusers_tensors(lora: Lora, prefix: str) -> dict[str, torch.Tensor]:
    """peft's keys under the pipeline component `prefix` ("unet", "transformer"), as `load_lora_weights` reads them."""
    out = {}
    for module, layer in lora.items():
        out[f"{prefix}.{module}.lora_A.weight"] = layer.down
        out[f"{prefix}.{module}.lora_B.weight"] = layer.up
    return out


def diffusers_metadata(lora: Lora, prefix: str) -> dict[str, str]:
    """diffusers' own LoRA metadata key: the LoraConfig with `prefix.`-prefixed keys, read by `load_lora_weights`."""
    config = {f"{prefix}.{key}": value for key, value in peft_config(lora).items()}
    return {"lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True)}


def down_up_alpha_tensors(lora: Lora, name: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """Each layer under `name(module)`: .lora_down.weight, .lora_up.weight and its own .alpha."""
    out = {}
    for module, layer in lora.items():
        key = name(module)
        out[f"{key}.lora_down.weight"] = layer.down
        out[f"{key}.lora_up.weight"] = layer.up
        out[f"{key}.alpha"] = torch.tensor(layer.alpha, dtype=torch.float32)  # 0-dim
    return out
