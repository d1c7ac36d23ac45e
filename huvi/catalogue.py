"""The preset catalogue: every preset of presets/ with its model family, its VRAM tier and what it
gives up, for the app's model picker and `python -m huvi presets`; and which preset fits this machine.

Everything is read from the presets themselves, so a new preset file is listed with no code change:

    family     model.family of the config the preset loads (huvi.families)
    tier       "CPU" for a preset whose models are built in code (model.source: tiny) or whose leading
               comment begins "CPU preset" (the demo model); otherwise the card size that comment
               names ("12 GB cards", "the 12-16 GB tier")
    gives up   what its config lacks against its family's reference, the GPU preset of the largest
               tier (then the most frames and pixels): the real model (for a CPU preset), the base model, frames, clip
               size, LoRA ranks. The reference itself gives up nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from huvi.config import PRESET_DIR, HuviConfig, ModelConfig, load_config, preset_names
from huvi.families import FAMILIES, TITLES, WEIGHT_FILES
from huvi.hub import local_source
from huvi.precision import CPU_PRESET, GPU_PRESET

CPU = "CPU"
_CARD = re.compile(r"(\d+)(?:\s*[-–]\s*(\d+))?\s*GB")  # "12 GB", "12-16 GB"


def preset_note(name: str) -> str:
    """The leading comment of presets/NAME.yaml: the hardware it is for and what it gives up, up to
    the details a line ending in ':' brings in (the memory arithmetic of the Wan presets)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not name or not path.is_file():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.removeprefix("#").strip()
        if not line.startswith("#") or text.endswith(":"):
            break
        lines.append(text)
    return " ".join(lines)


@dataclass(frozen=True)
class PresetEntry:
    name: str
    family: str  # model.family
    tier: str  # "CPU", "12 GB", "12–16 GB", "24 GB"; "GPU" when the leading comment names no card size
    gib: tuple[int, int]  # the tier's smallest and largest card in GB; (0, 0) for the CPU
    gives_up: tuple[str, ...]  # against its family's reference preset, e.g. ("12 frames (not 16)", ...)
    reference: str  # that preset (its own name for the reference itself)
    note: str  # the preset file's leading comment

    @property
    def cpu(self) -> bool:
        """Its models are built in code: it runs without a GPU or a download."""
        return self.tier == CPU

    @property
    def summary(self) -> str:
        """What it gives up, or that it is its family's full setting."""
        return f"gives up {', '.join(self.gives_up)}" if self.gives_up else "the family's full setting"

    @property
    def label(self) -> str:
        """`sd15-12gb · 12 GB · gives up 12 frames (not 16), ...`: one line for a list of presets."""
        return f"{self.name} · {self.tier} · {self.summary}"


def _tier(cfg: HuviConfig, note: str) -> tuple[str, tuple[int, int]]:
    if cfg.model.source == "tiny" or note.startswith("CPU preset"):
        return CPU, (0, 0)
    card = _CARD.search(note)
    if card is None:
        return "GPU", (1, 1)
    low, high = int(card[1]), int(card[2] or card[1])
    return (f"{low}–{high} GB" if high != low else f"{low} GB"), (low, high)


def _size(cfg: HuviConfig) -> int:
    return cfg.data.frames * cfg.data.width * cfg.data.height


def _model_name(model: ModelConfig) -> str:
    return Path(model.base).name.removesuffix("-Diffusers")


def _gives_up(cfg: HuviConfig, ref: HuviConfig, cpu: bool) -> tuple[str, ...]:
    """What `cfg` (of the CPU tier when `cpu`) lacks against `ref`, its family's reference (only what it has less of)."""
    lost = []
    if cfg.model.source == "tiny":
        lost.append("the real model (random tiny weights: a CPU-only toy)")
    elif cpu:
        lost.append(f"the real model ({_model_name(cfg.model)}: a small model of moving shapes for the CPU)")
    elif _model_name(cfg.model) != _model_name(ref.model):
        lost.append(f"{_model_name(cfg.model)} (not {_model_name(ref.model)})")
    if cfg.data.frames < ref.data.frames:
        lost.append(f"{cfg.data.frames} frames (not {ref.data.frames})")
    if cfg.data.width * cfg.data.height < ref.data.width * ref.data.height:
        lost.append(f"{cfg.data.width}×{cfg.data.height} (not {ref.data.width}×{ref.data.height})")
    ranks, ref_ranks = (cfg.motion.adapter.rank, cfg.dpo.adapter.rank), (ref.motion.adapter.rank, ref.dpo.adapter.rank)
    if any(mine < theirs for mine, theirs in zip(ranks, ref_ranks)):
        lost.append(f"motion/DPO LoRA ranks {ranks[0]}/{ranks[1]} (not {ref_ranks[0]}/{ref_ranks[1]})")
    return tuple(lost)


def catalogue() -> tuple[PresetEntry, ...]:
    """Every preset of presets/, by family (the registry's order), then tier (the CPU first), then name;
    read again when a preset file changes."""
    return _catalogue(tuple((path.name, path.stat().st_mtime_ns) for path in sorted(PRESET_DIR.glob("*.yaml"))))


@functools.lru_cache(maxsize=1)
def _catalogue(files: tuple[tuple[str, int], ...]) -> tuple[PresetEntry, ...]:
    """The catalogue of the preset files `files` ((name, mtime) pairs: the cache key)."""
    configs = {name: load_config(name) for name in preset_names()}
    notes = {name: preset_note(name) for name in configs}
    tiers = {name: _tier(cfg, notes[name]) for name, cfg in configs.items()}
    entries = []
    for family in FAMILIES:
        names = [name for name, cfg in configs.items() if cfg.model.family == family]
        if not names:
            continue
        gpu = [name for name in names if tiers[name][0] != CPU] or names
        ref = max(gpu, key=lambda name: (tiers[name][1][1], _size(configs[name])))  # the largest tier, then the largest clips
        for name in sorted(names, key=lambda name: (tiers[name][1], name)):
            tier, gib = tiers[name]
            entries.append(PresetEntry(name, family, tier, gib, _gives_up(configs[name], configs[ref], tier == CPU), ref, notes[name]))
    return tuple(entries)


def preset_entry(name: str) -> PresetEntry | None:
    """The catalogue's entry of preset `name` (None for a preset file given by path, or a typo)."""
    return next((entry for entry in catalogue() if entry.name == name), None)


def cpu_config(cfg: HuviConfig) -> bool:
    """Whether `cfg` is of a CPU preset (its catalogue entry's tier; for a preset file given by path,
    whether its models are built in code)."""
    entry = preset_entry(cfg.preset)
    return entry.cpu if entry is not None else cfg.model.source == "tiny"


def family_entries(family: str) -> list[PresetEntry]:
    return [entry for entry in catalogue() if entry.family == family]


def family_title(family: str) -> str:
    return TITLES.get(family, family)


def cpu_preset(family: str) -> str | None:
    """The family's CPU preset (the advice when a GPU preset is picked without a GPU)."""
    return next((entry.name for entry in family_entries(family) if entry.cpu), None)


def family_default(family: str, machine_default: str) -> str | None:
    """The preset a pick of `family` starts at: the machine's default when it is of that family;
    else the family's CPU preset when the machine's default is a CPU preset, its reference otherwise."""
    entries = family_entries(family)
    if not entries:
        return None
    if any(entry.name == machine_default for entry in entries):
        return machine_default
    default = preset_entry(machine_default)
    if default is None or default.cpu:
        return cpu_preset(family) or entries[0].reference
    return entries[0].reference


# this machine ------------------------------------------------------------------------------------
def _weight_files(model: ModelConfig) -> dict[str, str]:
    """Hub id or folder -> a file it holds once downloaded, for each part `model` loads (none for models built in code)."""
    return {} if model.source == "tiny" else {getattr(model, setting): file for setting, file in WEIGHT_FILES[model.family].items()}


def weight_sources(model: ModelConfig) -> list[str]:
    """The Hub ids or folders `model` loads its weights from."""
    return list(_weight_files(model))


def missing_weights(model: ModelConfig) -> list[str]:
    """The weight sources of `model` that would need a download: neither a folder holding them nor in
    the Hugging Face cache. Nothing is downloaded or loaded."""
    from huggingface_hub import try_to_load_from_cache

    def present(repo: str, file: str) -> bool:
        folder = Path(local_source(repo))
        if folder.is_dir():
            return (folder / file).is_file()
        try:
            return isinstance(try_to_load_from_cache(repo, file), str)
        except ValueError:  # neither a folder nor a valid Hub id (e.g. a folder that does not exist)
            return False

    return [source for source, file in _weight_files(model).items() if not present(source, file)]


def weights_on_disk(model: ModelConfig) -> bool:
    """True when every part of `model` loads without a download."""
    return not missing_weights(model)


@dataclass(frozen=True)
class PresetChoice:
    name: str
    reason: str  # one sentence: why this preset


def choose_preset() -> PresetChoice:
    """sd15-24gb with a CUDA GPU and the weights on disk; otherwise demo (the demo model, shipped
    with huvi), with the reason."""
    import torch

    real = GPU_PRESET
    if not torch.cuda.is_available():
        return PresetChoice(CPU_PRESET, "No CUDA GPU was found.")
    if not weights_on_disk(load_config(real).model):
        return PresetChoice(CPU_PRESET, "A GPU was found, but the Stable Diffusion 1.5 and AnimateDiff weights are not downloaded.")
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    reason = f"A CUDA GPU ({torch.cuda.get_device_name(0)}, {gib:.0f} GB) and the weights were found."
    if gib < 22:
        reason += " With less than 24 GB, pick sd15-16gb or sd15-12gb in the model picker."
    return PresetChoice(real, reason)
