"""Model families: each one module behind the interface of huvi.families.base, chosen by the
`model.family` setting through the registry here.

    sd15   Stable Diffusion 1.5 + AnimateDiff motion adapter (huvi.families.sd15)
    wan    Wan 2.1 T2V-1.3B / Wan 2.2 TI2V-5B (huvi.families.wan)

The registry names each family's class by import path, so reading a config imports no model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from huvi.errors import HuviError

if TYPE_CHECKING:
    from huvi.config import ModelConfig
    from huvi.families.base import ModelFamily

FAMILIES = {"sd15": "huvi.families.sd15.family:SD15", "wan": "huvi.families.wan.family:Wan"}  # model.family -> "module:class"
DEFAULT_FAMILY = "sd15"
TITLES = {"sd15": "SD1.5 + AnimateDiff", "wan": "Wan 2.1 / 2.2 (experimental)"}  # model.family -> its name for people (the app's model picker)
# model.family -> {model setting naming a Hub id or folder: a file that folder holds once downloaded}: whether a
# preset's weights are on this machine, told without loading them or importing model code (huvi.catalogue)
WEIGHT_FILES = {"sd15": {"base": "unet/config.json", "motion_adapter": "config.json"}, "wan": {"base": "transformer/config.json"}}
# model.family -> the names of its export formats (its `export_formats`), in the order offered, named here so
# the CLI's choices and the app's Export tab import no model code
EXPORT_FORMATS = {"sd15": ("diffusers", "kohya", "comfy-motion"), "wan": ("diffusers", "comfy")}
ALL_EXPORT_FORMATS = tuple(dict.fromkeys(fmt for names in EXPORT_FORMATS.values() for fmt in names))  # each once: the CLI's choices


def family_class(name: str) -> type[ModelFamily]:
    """The class of family `name`, or one sentence naming the valid ones."""
    if name not in FAMILIES:
        raise HuviError(f"Unknown model family {name!r}; valid ones are: {', '.join(sorted(FAMILIES))}.")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def family_for(model: ModelConfig) -> ModelFamily:
    """The family of `model.family`, built for these model settings."""
    return family_class(model.family)(model)


def smaller_preset(preset: str) -> str | None:
    """The next smaller VRAM tier of `preset` in its family, if there is one (the out-of-memory advice)."""
    return next((smaller for name in FAMILIES if (smaller := family_class(name).smaller_presets.get(preset))), None)


def frames_per_latent(model: ModelConfig) -> int:
    """Video frames per latent frame of `model`'s family, for where only a config is at hand
    (DenseDPO's segment checks and timelines, huvi.segments)."""
    return family_class(model.family).frames_per_latent
