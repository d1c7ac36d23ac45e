"""Typed run configuration: defaults here, per-tier overrides in `presets/*.yaml`.

Every field has a default and a help comment; `__post_init__` rejects a bad value with a sentence
that names it. The CLI, the app and the tests build a `HuviConfig` the same way
(`load_config(preset, overrides)`), and a run folder stores the resolved config as `config.yaml`,
which `HuviConfig.from_dict` reads back unchanged.

The defaults describe the real model on a 24 GB card; presets hold only what differs.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from huvi.errors import HuviError
from huvi.families import DEFAULT_FAMILY, FAMILIES
from huvi.families.sd15.targets import ALL_ATTENTION, MOTION_TARGETS  # the default family's adapter targets

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

def _check(ok: bool, message: str) -> None:
    if not ok:
        raise HuviError(message)


@dataclass
class ModelConfig:
    family: str = DEFAULT_FAMILY  # the model family (huvi.families): sd15 = SD1.5 + AnimateDiff
    source: Literal["pretrained", "tiny"] = "pretrained"  # Hub/local weights, or tiny random ones built in code
    base: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # SD1.5 in diffusers layout (Hub id or folder)
    motion_adapter: str = "guoyww/animatediff-motion-adapter-v1-5-2"  # AnimateDiff MotionAdapter (Hub id or folder)
    attention: Literal["sparse_causal", "full"] = "sparse_causal"  # spatial self-attention: frames 0 and i-1, or each frame alone
    attention_backend: Literal["auto", "sdpa", "xformers"] = "auto"  # auto = xformers on CUDA when importable, else SDPA
    gradient_checkpointing: bool = True  # recompute activations in backward: less memory, ~30% more time

    def __post_init__(self) -> None:
        _check(self.family in FAMILIES, f"model.family must be one of {', '.join(sorted(FAMILIES))}, not {self.family!r}.")
        _check(self.source in ("pretrained", "tiny"), f"model.source must be 'pretrained' or 'tiny', not {self.source!r}.")
        _check(self.attention in ("sparse_causal", "full"), f"model.attention must be 'sparse_causal' or 'full', not {self.attention!r}.")
        _check(
            self.attention_backend in ("auto", "sdpa", "xformers"),
            f"model.attention_backend must be auto, sdpa or xformers, not {self.attention_backend!r}.",
        )


@dataclass
class DataConfig:
    frames: int = 16  # frames per training clip (frame 0 is the clean conditioning frame)
    stride: int = 2  # keep every stride-th source frame: 16 frames x 2 = 32 source frames ~ 1.3 s at 24 fps
    width: int = 512  # pixels; must be a multiple of the VAE's downsampling factor
    height: int = 320
    max_cached_frames: int = 32  # strided frames cached per clip; the extra ones give room for temporal crops
    temporal_crop: bool = True  # random window of `frames` within the cached frames, the same for both clips of a pair
    hflip: bool = False  # random horizontal flip, the same for both clips of a pair; off because a mirror reverses left-right motion
    holdout: float = 0.0  # fraction of preference pairs held out of DPO training and scored every dpo.eval_every steps
    # Pair two rated clips only when their ratings differ by at least this. 1 is HuViDPO's (any two
    # different ratings); 2 leaves out the 4-vs-5 and 1-vs-2 pairs, which say more about a person's
    # rating noise than about what they prefer (the CPU presets': docs/LEARNING.md, "A category written
    # freely" and "Pairs only between ratings 2 or more apart").
    min_rating_gap: int = 1

    def __post_init__(self) -> None:
        _check(self.frames >= 2, f"data.frames must be at least 2 (frame 0 is the condition), not {self.frames}.")
        _check(self.stride >= 1, f"data.stride must be at least 1, not {self.stride}.")
        _check(self.width >= 8 and self.height >= 8, f"data.width and data.height must be at least 8, not {self.width}x{self.height}.")
        _check(self.width % 8 == 0 and self.height % 8 == 0, f"data.width and data.height must be multiples of 8, not {self.width}x{self.height}.")
        _check(
            self.max_cached_frames >= self.frames,
            f"data.max_cached_frames ({self.max_cached_frames}) must be at least data.frames ({self.frames}).",
        )
        _check(0.0 <= self.holdout < 1.0, f"data.holdout must be in [0, 1), not {self.holdout}.")
        _check(1 <= self.min_rating_gap <= 4, f"data.min_rating_gap must be from 1 to 4 (ratings are 1-5), not {self.min_rating_gap}.")


PAIR_SETTINGS = ("holdout", "min_rating_gap")  # the data settings that decide only which preference pairs form


@dataclass
class AdapterConfig:
    rank: int = 16  # LoRA rank r
    alpha: float = 32.0  # LoRA alpha; the update is scaled by alpha / rank (2.0 here)
    dropout: float = 0.0  # dropout on the LoRA input
    targets: str = ALL_ATTENTION  # regex fullmatched against module names

    def __post_init__(self) -> None:
        _check(self.rank >= 1, f"rank must be at least 1, not {self.rank}.")
        _check(self.alpha > 0, f"alpha must be positive, not {self.alpha}.")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), not {self.dropout}.")
        try:
            re.compile(self.targets)
        except re.error as err:
            raise HuviError(f"targets is not a valid regular expression ({err}).") from None


@dataclass
class StageConfig:
    steps: int = 500  # optimizer steps
    learning_rate: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warmup
    warmup_steps: int = 20  # linear warmup from 0
    batch_size: int = 1  # clips (motion) or pairs (dpo) per step and GPU
    grad_accum: int = 1  # micro-batches per optimizer step
    checkpoint_every: int = 100  # steps between checkpoints (the last step always checkpoints)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"steps must be at least 1, not {self.steps}.")
        _check(self.learning_rate > 0, f"learning_rate must be positive, not {self.learning_rate}.")
        _check(self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, not {self.lr_schedule!r}.")
        _check(self.warmup_steps >= 0, f"warmup_steps must be 0 or more, not {self.warmup_steps}.")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be at least 1.")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, not {self.checkpoint_every}.")


@dataclass
class MotionStageConfig(StageConfig):
    steps: int = 500
    learning_rate: float = 1e-4  # LoRA wants ~3x the 3e-5 LAMP used for full temporal layers
    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(rank=32, alpha=32.0, targets=MOTION_TARGETS))


@dataclass
class DpoStageConfig(StageConfig):
    steps: int = 1000
    learning_rate: float = 1e-4  # HuViDPO's published value; 1e-3 also degrades the winners (REFERENCE §4)
    # beta in the Diffusion-DPO paper's form: inside = -0.5 * beta * ((e_w - e_l) - (ref_w - ref_l)).
    # 5000 is the paper's SD1.5/SDXL value; diffusers' example folds the 0.5 in (its 2500 == 5000 here).
    beta: float = 5000.0
    # clip: pairs from the ratings (plus explicit pairs with a "winner"), one loss term per pair;
    # dense: the category's explicit pairs labelled per segment, one term per labelled segment (DenseDPO).
    mode: Literal["clip", "dense"] = "clip"
    # A supervised pull on the winner beside the DPO loss: sft_weight * (beta / 2) * (e_w - ref_w), so
    # 1 pulls the winner's denoising error down as hard as DPO's strongest pull (huvi.losses.winner_anchor).
    sft_weight: float = 0.0
    # A charge on the shift of the pair's errors that DPO leaves free: drift_weight * mean(drift^2),
    # drift = (beta / 4) * ((e_w - ref_w) + (e_l - ref_l)) in implicit-reward units (huvi.losses.drift_penalty).
    drift_weight: float = 0.0
    # DPO draws its timesteps, and held-out scoring spreads its draws, over the noisiest 1 - min_noise
    # of the family's timestep distribution (its quantiles above min_noise). 0 is the paper's uniform
    # draw; 0.5 keeps the noisier half, where a clip's layout and motion are decided, and leaves out
    # the low-noise steps whose errors are about each clip's fine detail (docs/LEARNING.md).
    min_noise: float = 0.0
    # The health check's "degrading" sign (huvi.health): the winners' and the losers' own losses both this
    # much above the reference's (relative, 20-step means). Set from tiny, whose healthy stages keep within
    # ~2% (issue 16's collapse: 40%); a trained base drifts further in healthy runs, so the demo preset
    # sets its own. The GPU presets keep this, unmeasured there: a warning too many costs less than a
    # collapse missed.
    degrade_warning: float = 0.05
    eval_every: int = 50  # steps between held-out pair accuracy checks (only when data.holdout > 0)
    eval_samples: int = 8  # noise/timestep draws per pair when scoring held-out pairs
    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(rank=16, alpha=32.0, dropout=0.1))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.beta > 0, f"dpo.beta must be positive, not {self.beta}.")
        _check(self.mode in ("clip", "dense"), f"dpo.mode must be clip or dense, not {self.mode!r}.")
        _check(self.sft_weight >= 0, f"dpo.sft_weight must be 0 or more, not {self.sft_weight}.")
        _check(self.drift_weight >= 0, f"dpo.drift_weight must be 0 or more, not {self.drift_weight}.")
        _check(0 <= self.min_noise < 1, f"dpo.min_noise must be in [0, 1), not {self.min_noise}.")
        _check(self.degrade_warning > 0, f"dpo.degrade_warning must be positive, not {self.degrade_warning}.")
        _check(self.eval_every >= 1 and self.eval_samples >= 1, "dpo.eval_every and dpo.eval_samples must be at least 1.")


@dataclass
class DenseConfig:
    """Aligned pairs for DenseDPO (Wu et al. 2025), made by `python -m huvi dense-pairs`."""

    # SDEdit strength: frames 1.. are noised to t ~ eta*T and denoised twice. The paper's 0.75 keeps
    # the source's motion and layout and redraws detail; lower keeps more of the source.
    eta: float = 0.75
    # frames per segment of a new aligned pair: 16 frames -> 4 segments of ~0.5 s at generate.fps 8,
    # short enough that a defect is local, long enough to judge by eye; a multiple of the family's
    # frames per latent frame (Wan: 4, splitting the frames after frame 0; huvi.segments)
    segment_frames: int = 4

    def __post_init__(self) -> None:
        _check(0.0 < self.eta <= 1.0, f"dense.eta must be in (0, 1], not {self.eta}.")
        _check(self.segment_frames >= 1, f"dense.segment_frames must be at least 1, not {self.segment_frames}.")


@dataclass
class OptimConfig:
    optimizer: Literal["adamw8bit", "adamw"] = "adamw8bit"  # bitsandbytes 8-bit AdamW, plain AdamW if it does not load
    weight_decay: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # gradient clipping

    def __post_init__(self) -> None:
        _check(self.optimizer in ("adamw8bit", "adamw"), f"optim.optimizer must be adamw8bit or adamw, not {self.optimizer!r}.")
        _check(self.max_grad_norm > 0, f"optim.max_grad_norm must be positive, not {self.max_grad_norm}.")


@dataclass
class FirstFrameConfig:
    """DPO-SDXL makes the first frame when the user gives none (HuViDPO): the SDXL base pipeline
    with its UNet swapped for the Diffusion-DPO-tuned one. The tiny preset uses a tiny random SDXL;
    the demo preset draws a shape instead (its model knows nothing else)."""

    # dpo_sdxl: DPO-SDXL draws it from the prompt; shapes: huvi.demo_data draws the shape and colour
    # the prompt names on a soft background, like the demo model's training clips (no model, no download)
    source: Literal["dpo_sdxl", "shapes"] = "dpo_sdxl"
    sdxl_base: str = "stabilityai/stable-diffusion-xl-base-1.0"  # SDXL pipeline (Hub id or folder): VAE, text encoders, scheduler
    dpo_unet: str = "mhdang/dpo-sdxl-text2image-v1"  # replaces the base UNet (its `unet` subfolder)
    steps: int = 30  # SDXL denoising steps
    guidance: float = 5.0  # classifier-free guidance scale (DPO-SDXL's model card value)
    area: int = 1024 * 1024  # pixels of the SDXL image; the width x height bucket nearest the video's aspect ratio is used
    cpu_offload: bool = False  # SDXL's modules visit the GPU one at a time (slower; for cards under 16 GB)

    def __post_init__(self) -> None:
        _check(self.source in ("dpo_sdxl", "shapes"), f"first_frame.source must be dpo_sdxl or shapes, not {self.source!r}.")
        _check(self.steps >= 1, f"first_frame.steps must be at least 1, not {self.steps}.")
        _check(self.guidance >= 1.0, f"first_frame.guidance must be at least 1 (1 turns guidance off), not {self.guidance}.")
        _check(self.area >= 64 * 64, f"first_frame.area must be at least {64 * 64} pixels, not {self.area}.")


@dataclass
class GenerateConfig:
    steps: int = 25  # denoising steps of the video sampler
    guidance: float = 7.5  # classifier-free guidance scale (1 turns it off and halves the work)
    scheduler: Literal["ddim", "euler", "dpm++"] = "ddim"  # built from the training noise schedule
    negative_prompt: str = ""  # the unconditional branch of guidance
    fps: int = 8  # frames per second of written clips (16 frames at stride 2 of 24 fps footage ~ 1.3 s)
    preview_every: int = 0  # training steps between preview clips in RUN/previews (0: none)
    preview_prompts: list[str] = field(default_factory=list)  # more prompts per preview, besides the category's (huvi.previews)
    first_frame: FirstFrameConfig = field(default_factory=FirstFrameConfig)

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"generate.steps must be at least 1, not {self.steps}.")
        _check(self.guidance >= 1.0, f"generate.guidance must be at least 1 (1 turns guidance off), not {self.guidance}.")
        _check(self.scheduler in ("ddim", "euler", "dpm++"), f"generate.scheduler must be ddim, euler or dpm++, not {self.scheduler!r}.")
        _check(self.fps >= 1, f"generate.fps must be at least 1, not {self.fps}.")
        _check(self.preview_every >= 0, f"generate.preview_every must be 0 (off) or more, not {self.preview_every}.")
        _check(
            isinstance(self.preview_prompts, list) and all(isinstance(p, str) and p.strip() for p in self.preview_prompts),
            f"generate.preview_prompts must be a list of prompts, e.g. [\"a cat jumping\"], not {self.preview_prompts!r}.",
        )


@dataclass
class HuviConfig:
    preset: str = "sd15-24gb"  # the preset this config was resolved from (informational)
    seed: int = 0  # decides pair order, noise, timesteps, crops and flips
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto = bf16 on GPUs that have it, fp16 on others, fp32 on CPU
    log_every: int = 10  # steps between log lines (metrics.jsonl gets every step)
    keep_checkpoints: int = 2  # older checkpoints are deleted once a newer one is complete
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    motion: MotionStageConfig = field(default_factory=MotionStageConfig)
    dpo: DpoStageConfig = field(default_factory=DpoStageConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        _check(self.precision in ("auto", "no", "fp16", "bf16"), f"precision must be auto, no, fp16 or bf16, not {self.precision!r}.")
        _check(self.log_every >= 1 and self.keep_checkpoints >= 1, "log_every and keep_checkpoints must be at least 1.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HuviConfig:
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def stage(self, name: str) -> StageConfig:
        return {"motion": self.motion, "dpo": self.dpo}[name]


def _build(cls: type, data: dict[str, Any], prefix: str, defaults: Any = None) -> Any:
    """Build dataclass `cls` from a nested dict on top of `defaults` (an instance; cls() if None),
    refusing unknown keys and wrong types. A nested dict overrides only the keys it names, so a
    preset's `dpo.adapter.rank` keeps the dpo adapter's other defaults."""
    if not isinstance(data, dict):
        raise HuviError(f"{prefix.rstrip('.') or 'config'} must be a mapping, not {data!r}.")
    base = defaults if defaults is not None else cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise HuviError(f"Unknown setting {prefix}{key}; valid ones are: {', '.join(sorted(names))}.")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{prefix}{key}.", getattr(base, key))
        else:
            kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return dataclasses.replace(base, **kwargs)
    except HuviError as err:
        message = str(err)
        raise HuviError(message if message.startswith(prefix) else f"{prefix}{message}") from None


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value  # checked by __post_init__ with the allowed values named
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    expected = hint if origin is None else origin
    if expected in (int, float, str, bool) and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        raise HuviError(f"{name} must be a {expected.__name__}, not {value!r}.")
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HuviError(f"Cannot set {dotted}: {part} is not a group of settings.")
    node[parts[-1]] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_file(preset: str) -> Path | None:
    """The YAML file `preset` names when it is a path; None for a preset's name ("wan21-1.3b": its dot is no suffix)."""
    path = Path(preset)
    return path if path.suffix in (".yaml", ".yml") else None


def read_preset(preset: str) -> dict[str, Any]:
    """The overrides of preset `preset` (a name from presets/ or a path to a YAML file)."""
    path = _preset_file(preset) or PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise HuviError(f"No preset {preset!r}; choose one of: {', '.join(preset_names())}, or give a path to a YAML file.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise HuviError(f"Preset file {path} is not valid YAML ({err}).") from None
    if not isinstance(data, dict):
        raise HuviError(f"Preset file {path} must hold a mapping of settings.")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["dpo.beta=2500", "data.hflip=false"]` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise HuviError(f"--set expects key=value (e.g. dpo.beta=2500), not {pair!r}.")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def load_config(preset: str = "sd15-24gb", overrides: list[str] | dict[str, Any] | None = None) -> HuviConfig:
    """Defaults, then the preset's overrides, then the caller's (`key=value` strings or a nested dict)."""
    over = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    data = _merge(read_preset(preset), over)
    file = _preset_file(preset)
    data.setdefault("preset", file.stem if file else preset)
    return HuviConfig.from_dict(data)
