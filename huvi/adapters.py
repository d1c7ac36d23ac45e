"""The two LoRA adapters of a run, `motion` and `dpo`, on one UNet through peft.

The DPO reference model is the same UNet with only `motion` active (`active_adapters`), never a
second copy. Adapter files are safetensors with peft keys (adapter name stripped) and the adapter's
settings in the string metadata, so `load_adapter` can rebuild the same LoRA.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file

from huvi.config import AdapterConfig
from huvi.errors import HuviError
from huvi.io import write_safetensors

MOTION, DPO = "motion", "dpo"


def lora_config(cfg: AdapterConfig) -> LoraConfig:
    # init_lora_weights=True: A is Kaiming-uniform, B is zero, so a new adapter changes nothing.
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.targets, init_lora_weights=True)


def _tuner_layers(unet: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def adapter_parameters(unet: torch.nn.Module, name: str) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if f".{name}." in n and "lora_" in n]


def set_active(unet: torch.nn.Module, names: list[str], trainable: str | None) -> None:
    """Activate adapters `names`; only adapter `trainable` (if any) gets gradients, the base never."""
    for layer in _tuner_layers(unet):
        layer.set_adapter(names)
    unet.requires_grad_(False)
    if trainable is not None:
        for p in adapter_parameters(unet, trainable):
            p.requires_grad_(True)


@contextmanager
def active_adapters(unet: torch.nn.Module, names: list[str]) -> Iterator[None]:
    """Temporarily run with only `names` active (e.g. the DPO reference: `[MOTION]`), then restore
    the previous adapters and every parameter's requires_grad (peft's set_adapter changes it)."""
    layers = _tuner_layers(unet)
    before = [list(layer.active_adapters) for layer in layers]
    grads = [(p, p.requires_grad) for p in unet.parameters()]
    for layer in layers:
        layer.set_adapter(names)
    try:
        yield
    finally:
        for layer, names_before in zip(layers, before):
            layer.set_adapter(names_before)
        for p, flag in grads:
            p.requires_grad_(flag)


def add_adapter(unet: torch.nn.Module, name: str, cfg: AdapterConfig) -> None:
    """Inject a fresh LoRA `name` (zero update) with its parameters in fp32 for stable training."""
    if not any(re.fullmatch(cfg.targets, n) for n, _ in unet.named_modules()):
        raise HuviError(f"The {name} adapter's targets match no layer of the UNet; check {name}.adapter.targets.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # a second adapter is the design
        unet.add_adapter(lora_config(cfg), adapter_name=name)
    for p in adapter_parameters(unet, name):
        p.data = p.data.float()


def adapter_state_dict(unet: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(unet, adapter_name=name)


def save_adapter(path: Path, unet: torch.nn.Module, name: str, cfg: AdapterConfig, metadata: dict[str, str] | None = None) -> None:
    meta = {"huvi.adapter": name, "huvi.adapter_config": json.dumps(asdict(cfg))} | (metadata or {})
    write_safetensors(path, adapter_state_dict(unet, name), metadata=meta)


def read_adapter_config(path: Path) -> AdapterConfig:
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "huvi.adapter_config" not in meta:
        raise HuviError(f"{path} is not a huvi adapter file (no huvi.adapter_config in its metadata).")
    return AdapterConfig(**json.loads(meta["huvi.adapter_config"]))


def load_adapter(unet: torch.nn.Module, path: Path, name: str) -> AdapterConfig:
    """Add adapter `name` to `unet` with the LoRA stored at `path` (a file written by save_adapter)."""
    path = Path(path)
    if not path.is_file():
        raise HuviError(f"No {name} adapter at {path}; train that stage first.")
    cfg = read_adapter_config(path)
    add_adapter(unet, name, cfg)
    result = set_peft_model_state_dict(unet, load_file(str(path)), adapter_name=name)
    missing = [k for k in result.missing_keys if f".{name}." in k]
    if missing or result.unexpected_keys:
        raise HuviError(f"{path} does not fit this UNet ({len(missing)} missing, {len(result.unexpected_keys)} unexpected keys); was it trained with another model?")
    return cfg
