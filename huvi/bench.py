"""`python -m huvi.bench`: memory, speed and FLOPs of one training step, huvi's and the naive one.

Builds a preset's model with random weights (no download: the full-size SD1.5 UNet, VAE and text
encoder and the AnimateDiff v1-5-2 MotionAdapter come from the small JSON configs in
`huvi/configs/`; the tiny preset uses huvi.tiny), runs warm-up plus N steps of a stage at the
preset's frames and resolution, and prints one JSON line per configuration.

huvi's step is composed of the functions the trainer calls: cached latents cropped by
`crop_and_flip`, `denoising_errors` (motion) or `pair_errors` + `diffusion_dpo_loss` (DPO, the
reference being the same UNet with only the motion adapter active), LoRA from `add_adapter` /
`set_active`, the optimizer from `make_optimizer`, accelerate's autocast, gradient checkpointing as
the preset sets it. `--naive` adds the step as published video-DPO code does it, measured in the
same process: a `copy.deepcopy` of the UNet as the DPO reference, no gradient checkpointing, fp32
`torch.optim.AdamW`, and no caching (the VAE encodes the clips' pixel frames and the text encoder
the prompt inside every step). Everything else (precision, LoRA, loss) is the same, so the ratio
isolates those four choices.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one forward + backward of the
same step built on the meta device (shapes only, no memory, the same on any machine). Model FLOPs
leave out the recomputation of gradient checkpointing (MFU is against them); hardware FLOPs
include it (HFU). `--estimate` prints, without running anything, the step's peak memory as the
meta run sees it: every tensor an op allocates is counted while it lives, attention runs as the
memory-efficient kernel a GPU uses, and weights and activations are bf16 as under autocast.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import logging
import platform
import re
import statistics
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.module_tracker import ModuleTracker
from transformers import CLIPTextConfig, CLIPTextModel

from huvi import tiny
from huvi.adapters import DPO, MOTION, adapter_parameters, add_adapter, set_active
from huvi.backbone import assemble_unet, load_encoders, load_unet
from huvi.batches import crop_and_flip, derived_seed
from huvi.cache import ClipLatents
from huvi.config import HuviConfig, ModelConfig, load_config, parse_overrides, preset_names
from huvi.diffusion import SD15_SCHEDULER
from huvi.dpo import denoising_errors, pair_errors
from huvi.errors import HuviError
from huvi.losses import diffusion_dpo_loss
from huvi.optim import make_lr_schedule, make_optimizer
from huvi.precision import resolve_precision, weight_dtype

logger = logging.getLogger("huvi.bench")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# Full-size architectures: each file is the model's public config.json (diffusers layout).
SD15_UNET = "sd15_unet"  # stable-diffusion-v1-5 unet/config.json
SD15_VAE = "sd15_vae"  # stable-diffusion-v1-5 vae/config.json
SD15_TEXT_ENCODER = "sd15_text_encoder"  # stable-diffusion-v1-5 text_encoder/config.json (CLIP ViT-L/14)
MOTION_ADAPTER = "animatediff_motion_adapter_v1_5_2"  # guoyww/animatediff-motion-adapter-v1-5-2: its architecture fields (v2 has the mid-block motion module)

STAGES = ("motion", "dpo")
GIB = 2**30
TOKENS = 77  # CLIP's prompt length

# Peak dense bf16 tensor-core TFLOP/s (vendor datasheets, without sparsity; fp32 accumulation
# for GeForce cards, whose fp16-accumulate figure is twice this). First substring of the CUDA
# device name that matches wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


# architectures ------------------------------------------------------------------------------


def read_architecture(name: str) -> dict:
    """The shipped config dict `huvi/configs/<name>.json`."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def full_size_unet(model: ModelConfig, device: torch.device | str) -> UNetMotionModel:
    """SD1.5 UNet + AnimateDiff v1-5-2 motion modules, random weights, built on `device`
    (`"meta"` for shapes only) and assembled as load_unet assembles the pretrained ones."""
    with torch.device(device):
        unet2d = UNet2DConditionModel.from_config(read_architecture(SD15_UNET))
        adapter = MotionAdapter.from_config(read_architecture(MOTION_ADAPTER))
        return assemble_unet(unet2d, adapter, model)


def full_size_encoders(device: torch.device | str) -> tuple[AutoencoderKL, CLIPTextModel]:
    """SD1.5's VAE and CLIP text encoder, random weights, built on `device`."""
    with torch.device(device):
        vae = AutoencoderKL.from_config(read_architecture(SD15_VAE))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(read_architecture(SD15_TEXT_ENCODER)))
    return vae.eval(), text_encoder.eval()


def _unet(model: ModelConfig, device: torch.device) -> UNetMotionModel:
    if model.source == "tiny":
        return load_unet(model).to(device)
    return full_size_unet(model, device)


def _encoders(model: ModelConfig, device: torch.device) -> tuple[AutoencoderKL, CLIPTextModel]:
    if model.source == "tiny":
        encoders = load_encoders(model)
        return encoders.vae.to(device), encoders.text_encoder.to(device)
    return full_size_encoders(device)


def _vae_config(model: ModelConfig) -> dict:
    return tiny.VAE if model.source == "tiny" else read_architecture(SD15_VAE)


def _latent_shape(cfg: HuviConfig, frames: int) -> tuple[int, int, int, int]:
    """(c, frames, h, w) of a clip's latents at the preset's resolution."""
    vae = _vae_config(cfg.model)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    return vae["latent_channels"], frames, cfg.data.height // factor, cfg.data.width // factor


# one step -------------------------------------------------------------------------------------


class CachedInputs:
    """huvi's inputs: latents and the prompt embedding cached before training, on the CPU."""

    def __init__(self, cfg: HuviConfig, clips: int, text_dim: int) -> None:
        self.cfg = cfg
        shape = _latent_shape(cfg, cfg.data.max_cached_frames)
        self.clips = [ClipLatents(torch.randn(shape), torch.randn(shape)) for _ in range(clips)]  # (c, F, h, w)
        self.prompt_embeds = torch.randn(TOKENS, text_dim)  # (tokens, dim)

    def __call__(self, batch: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cfg.data
        groups = [crop_and_flip(self.clips, d.frames, d.temporal_crop, d.hflip, gen) for _ in range(batch)]  # each (k, c, f, h, w)
        latents = torch.cat([torch.stack([g[i] for g in groups]) for i in range(len(self.clips))])  # (k b, c, f, h, w): [winners; losers]
        return latents.to(device, dtype), self.prompt_embeds.to(device, dtype)

    def modules(self) -> list[torch.nn.Module]:
        return []


class UncachedInputs:
    """The naive inputs: pixel frames and prompt tokens, encoded by the VAE and text encoder every step."""

    def __init__(self, cfg: HuviConfig, clips: int, vae: AutoencoderKL, text_encoder: CLIPTextModel) -> None:
        self.vae, self.text_encoder = vae, text_encoder
        self.pixels = torch.rand(clips, cfg.data.frames, 3, cfg.data.height, cfg.data.width) * 2 - 1  # (k, f, 3, H, W) in [-1, 1]
        self.token_ids = torch.randint(0, text_encoder.config.vocab_size, (1, TOKENS))

    @torch.no_grad()
    def __call__(self, batch: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixels.repeat_interleave(batch, dim=0).to(device, dtype)  # (k b, f, 3, H, W)
        latents = self.vae.encode(pixels.flatten(0, 1)).latent_dist.sample() * self.vae.config.scaling_factor  # (k b f, c, h, w)
        latents = latents.unflatten(0, pixels.shape[:2]).transpose(1, 2)  # (k b, c, f, h, w)
        text = self.text_encoder(self.token_ids.to(device))[0][0]  # (tokens, dim)
        return latents, text

    def modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.text_encoder]


@dataclass
class Setup:
    """What one configuration holds: the trained UNet, its DPO reference, the step's inputs."""

    cfg: HuviConfig
    stage: str
    naive: bool
    device: torch.device
    dtype: torch.dtype
    unet: UNetMotionModel  # adapters attached
    reference: torch.nn.Module | None  # DPO: `unet` itself (huvi) or a deep copy (naive); motion: None
    inputs: CachedInputs | UncachedInputs
    scheduler: DDPMScheduler  # SD1.5's training noise schedule (the tiny preset uses it too)
    model: torch.nn.Module  # what the trained forward calls: `unet`, or accelerate's prepared wrapper of it
    autocast: Callable[[], AbstractContextManager] = nullcontext

    def modules(self) -> list[torch.nn.Module]:
        """Every model held, once (huvi's reference is the trained UNet itself)."""
        held = (self.unet, self.reference, *self.inputs.modules())
        return [m for i, m in enumerate(held) if m is not None and all(m is not other for other in held[:i])]


def build_setup(cfg: HuviConfig, stage: str, naive: bool, device: torch.device, dtype: torch.dtype) -> Setup:
    """The model of `stage` prepared the way the trainer prepares it, or the naive way.

    The motion adapter is a fresh LoRA standing in for the trained one the DPO stage loads.
    """
    if stage not in STAGES:
        raise HuviError(f"--stage must be motion, dpo or both, not {stage!r}.")
    unet = _unet(cfg.model, device)
    if cfg.model.gradient_checkpointing and not naive:
        unet.enable_gradient_checkpointing()
    unet.requires_grad_(False)
    unet.to(device=device, dtype=dtype)  # frozen base in the weight dtype; adapters are added in fp32
    torch.manual_seed(derived_seed(cfg.seed, stage, "init"))
    add_adapter(unet, MOTION, cfg.motion.adapter)
    reference = None
    if stage == DPO:
        reference = copy.deepcopy(unet).requires_grad_(False) if naive else unet
        add_adapter(unet, DPO, cfg.dpo.adapter)
        set_active(unet, [MOTION, DPO], trainable=DPO)
    else:
        set_active(unet, [MOTION], trainable=MOTION)
    unet.to(device)
    clips = 2 if stage == DPO else 1
    if naive:
        vae, text_encoder = _encoders(cfg.model, device)
        inputs = UncachedInputs(cfg, clips, vae.to(dtype=dtype).requires_grad_(False), text_encoder.to(dtype=dtype).requires_grad_(False))
    else:
        inputs = CachedInputs(cfg, clips, unet.config.cross_attention_dim)
    return Setup(cfg, stage, naive, device, dtype, unet, reference, inputs, DDPMScheduler(**SD15_SCHEDULER), model=unet)


def step_loss(setup: Setup, gen: torch.Generator) -> torch.Tensor:
    """The loss of one micro-batch, as the trainer's _motion_loss / _dpo_loss compute it."""
    cfg, scheduler = setup.cfg, setup.scheduler
    batch = cfg.stage(setup.stage).batch_size
    latents, text = setup.inputs(batch, gen, setup.device, setup.dtype)  # (k b, c, f, h, w), (tokens, dim)
    shape = (batch, *latents.shape[1:])  # one noise and timestep per clip, or per pair
    noise = torch.randn(shape, generator=gen).to(setup.device, setup.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen).to(setup.device)
    if setup.stage == MOTION:
        with setup.autocast():
            return denoising_errors(setup.model, scheduler, latents, noise, timesteps, text.unsqueeze(0).expand(batch, -1, -1)).mean()
    latents_w, latents_l = latents.chunk(2)  # each (b, c, f, h, w)
    errors = pair_errors(setup.model, setup.reference, scheduler, latents_w, latents_l, text, noise, timesteps, setup.autocast)
    return diffusion_dpo_loss(*errors, cfg.dpo.beta).loss


# counting on the meta device --------------------------------------------------------------------


def _memory_efficient_sdpa(sdpa: Callable) -> Callable:
    """`sdpa` that runs unmasked attention as the memory-efficient kernel, which keeps no
    (queries x keys) score matrix, as on a GPU; on the meta device PyTorch picks the math path."""

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or dropout_p or is_causal or kwargs:
            return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, scale=scale)[0]  # (b, heads, n, d)

    return attention


PARTS = (  # (part of a step, test on a module name as ModuleTracker and FlopCounterMode write it)
    ("unet motion modules", re.compile(r"UNetMotionModel\..*\.motion_modules\.\d+")),
    ("unet spatial transformers", re.compile(r"UNetMotionModel\..*\.attentions\.\d+")),
    ("unet resnets", re.compile(r"UNetMotionModel\..*\.resnets\.\d+")),
    ("vae encoder", re.compile(r"Encoder")),  # vae.encode() calls vae.encoder directly
    ("text encoder", re.compile(r"CLIPTextModel")),
)


def step_part(module_names: Iterable[str]) -> str:
    """The part of the step that modules `module_names` (the running module and its parents) belong to."""
    names = list(module_names)
    return next((part for part, pattern in PARTS if any(pattern.fullmatch(n) for n in names)), "other")


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, counting every op's outputs until they are freed: what a
    caching allocator's `max_memory_allocated` reports, less its rounding and fragmentation. Each
    storage is booked to the step part (`where()`) that allocated it."""

    def __init__(self, resident: Iterable[torch.Tensor], where: Callable[[], str]) -> None:
        super().__init__()
        self.where = where
        self.live = self.peak = 0
        self.by_part: dict[str, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        for tensor in resident:
            self._add(tensor, "weights")
        self.resident = self.live

    def _add(self, tensor: torch.Tensor, part: str) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._refs:
            return  # a view of, or an in-place op on, a tensor already counted
        nbytes = storage.nbytes()

        def freed(_ref, key=key) -> None:
            self.live -= nbytes
            self.by_part[part] -= nbytes
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        self.live += nbytes
        self.by_part[part] = self.by_part.get(part, 0) + nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        part = self.where()
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._add(leaf, part)
        return out


@contextmanager
def _meta_step(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool | None) -> Iterator[tuple[Setup, torch.Generator]]:
    """The step's setup built on the meta device in bf16, ready for one forward + backward.

    checkpointing: override the preset's gradient checkpointing (None keeps it; naive never uses it).
    SDPA runs as the memory-efficient kernel, patched on the module rather than through a
    TorchFunctionMode: checkpoint recomputation runs in the autograd engine's meta-device thread,
    which function modes do not reach.
    """
    if checkpointing is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gradient_checkpointing=checkpointing))
    with torch.random.fork_rng(devices=[]):
        setup = build_setup(cfg, stage, naive, torch.device("meta"), torch.bfloat16)
        for module in setup.modules():
            module.to(torch.bfloat16)  # LoRA too: under autocast its matmuls and saved inputs are bf16
        setup.unet.train()
        with mock.patch.object(F, "scaled_dot_product_attention", _memory_efficient_sdpa(F.scaled_dot_product_attention)):
            yield setup, torch.Generator().manual_seed(cfg.seed)


@dataclass
class FlopCount:
    total: int  # one forward + backward, checkpoint recomputation included
    forward_by_part: dict[str, int]  # the forward passes (reference and trained) by step part, when asked for


def count_flops(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool | None = None, by_part: bool = False) -> FlopCount:
    """FLOPs of one forward + backward of the step (FlopCounterMode on the meta device).

    by_part: also split the forward's FLOPs by step part (a second counter, so slower). Parts are
    attributed in the forward only: FlopCounterMode's module tracking does not follow checkpoint
    recomputation in backward.
    """
    with _meta_step(cfg, stage, naive, checkpointing) as (setup, gen), FlopCounterMode(display=False) as counter:
        with FlopCounterMode(display=False) if by_part else nullcontext() as forward_counter:
            loss = step_loss(setup, gen)
        loss.backward()
    if forward_counter is None:
        return FlopCount(counter.get_total_flops(), {})
    counts = {name: sum(ops.values()) for name, ops in forward_counter.get_flop_counts().items()}
    parts = {part: sum(v for n, v in counts.items() if pattern.fullmatch(n)) for part, pattern in PARTS}
    parts["other"] = forward_counter.get_total_flops() - sum(parts.values())
    return FlopCount(counter.get_total_flops(), {k: v for k, v in parts.items() if v})


@dataclass
class MemoryProfile:
    resident: int  # weights and buffers (bf16, LoRA included)
    after_forward: int  # live when the loss is computed: weights + what backward keeps
    kept_by_part: dict[str, int]  # after_forward less the weights, by the step part that made them
    peak: int  # the most alive at once in forward and backward
    trainable: list[torch.Size]  # shapes of the trained LoRA tensors


def profile_memory(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool | None = None) -> MemoryProfile:
    """Live bytes through one forward + backward of the step on the meta device.

    Counted without FlopCounterMode, whose module tracking keeps checkpoint-recomputed tensors
    alive through backward (it would report tens of GiB that a GPU never holds).
    """
    with _meta_step(cfg, stage, naive, checkpointing) as (setup, gen):
        resident = [t for m in setup.modules() for t in (*m.parameters(), *m.buffers())]
        tracker = ModuleTracker()
        in_forward = False
        with _LiveBytes(resident, lambda: step_part(tracker.parents) if in_forward else "backward") as live:
            with tracker:
                in_forward = True
                loss = step_loss(setup, gen)
                in_forward = False
            after_forward = live.live
            kept = {part: n for part, n in live.by_part.items() if n and part != "weights"}
            loss.backward()
            del loss
        trainable = [p.shape for p in adapter_parameters(setup.unet, stage)]
    return MemoryProfile(live.resident, after_forward, kept, live.peak, trainable)


# measuring -------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense bf16 TFLOP/s from PEAK_BF16_TFLOPS, or None when it is not listed."""
    return next((value for key, value in PEAK_BF16_TFLOPS if key in device_name), None)


def _reset_peak_rss() -> bool:
    """Start a new peak of this process's resident memory (Linux: /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    try:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """Device and library versions of a result line."""
    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 2) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
    } | {package: _version(package) for package in ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes")}


def _describe(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool) -> dict:
    d = cfg.data
    return {
        "preset": cfg.preset,
        "stage": stage,
        "naive": naive,
        "frames": d.frames,
        "resolution": f"{d.width}x{d.height}",
        "batch": cfg.stage(stage).batch_size,  # clips (motion) or pairs (dpo) per step
        "gradient_checkpointing": checkpointing,
        "attention": cfg.model.attention,
    }


def _gib(n: float | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _flops(cfg: HuviConfig, stage: str, naive: bool) -> tuple[int, int]:
    """(model FLOPs, hardware FLOPs) of one step: without and with checkpoint recomputation."""
    hardware = count_flops(cfg, stage, naive).total
    if naive or not cfg.model.gradient_checkpointing:
        return hardware, hardware
    return count_flops(cfg, stage, naive, checkpointing=False).total, hardware


def measure(cfg: HuviConfig, stage: str, naive: bool, steps: int, warmup: int, peak: float | None) -> dict:
    """Warm up, time `steps` optimizer steps of `stage`, and return the result line."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.precision), cpu=not torch.cuda.is_available())
    device, dtype = accelerator.device, weight_dtype(accelerator.mixed_precision)
    cuda = device.type == "cuda"
    scfg = cfg.stage(stage)
    row = environment(device) | _describe(cfg, stage, naive, cfg.model.gradient_checkpointing and not naive)
    logger.info("%s %s%s: building", cfg.preset, stage, " (naive)" if naive else "")
    setup = build_setup(cfg, stage, naive, device, dtype)
    params = adapter_parameters(setup.unet, stage)
    optim_cfg = dataclasses.replace(cfg.optim, optimizer="adamw") if naive else cfg.optim  # naive: fp32 torch AdamW
    optimizer = make_optimizer(params, scfg, optim_cfg)
    schedule = make_lr_schedule(optimizer, scfg)
    setup.model, optimizer = accelerator.prepare(setup.unet, optimizer)
    setup.model.train()
    setup.autocast = accelerator.autocast
    unique = {t.untyped_storage().data_ptr(): t.numel() for m in setup.modules() for t in m.parameters()}
    row |= {
        "precision": accelerator.mixed_precision,
        "optimizer": type(optimizer.optimizer).__name__,
        "params_total": sum(unique.values()),  # every parameter held: UNet, a reference copy, encoders
        "params_trainable": sum(p.numel() for p in params),
        "warmup": warmup,
        "steps": steps,
    }
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    row["gpu_resident_gib"] = _gib(torch.cuda.memory_allocated(device)) if cuda else None  # weights, LoRA, the inputs
    rss_reset = _reset_peak_rss()
    times: list[float] = []
    error = None
    try:
        for step in range(warmup + steps):
            t0 = time.perf_counter()
            _train_step(setup, accelerator, optimizer, schedule, params, step)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            if step >= warmup:
                times.append(seconds)
            logger.debug("step %d: %.3f s", step + 1, seconds)
    except torch.OutOfMemoryError:
        error = f"out of memory in step {step + 1}"  # the peak memory below is where it stopped
        optimizer.zero_grad(set_to_none=True)
    row |= {
        "gpu_peak_allocated_gib": _gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
        "gpu_peak_reserved_gib": _gib(torch.cuda.max_memory_reserved(device)) if cuda else None,
        "cpu_peak_rss_gib": _gib(_peak_rss()) if rss_reset else None,  # host memory of the whole process during the steps
    }
    accelerator.free_memory()
    del setup, optimizer, schedule, params
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    model_flops, hardware_flops = _flops(cfg, stage, naive)
    median = statistics.median(times) if times else None
    achieved = model_flops / median / 1e12 if median else None
    row |= {
        "step_s_median": round(median, 4) if median else None,
        "step_s_p10": round(_percentile(times, 0.1), 4) if times else None,
        "step_s_p90": round(_percentile(times, 0.9), 4) if times else None,
        "step_s": [round(t, 4) for t in times],
        "flops_per_step": model_flops,
        "hardware_flops_per_step": hardware_flops,
        "flops_method": "FlopCounterMode, one forward+backward on the meta device; model FLOPs exclude checkpoint recomputation, hardware FLOPs include it",
        "achieved_tflops": round(achieved, 3) if achieved else None,
        "peak_tflops": peak if cuda else None,
        "mfu": round(achieved / peak, 4) if achieved and cuda and peak else None,
        "hfu": round(hardware_flops / median / 1e12 / peak, 4) if median and cuda and peak else None,
        "error": error,
    }
    return row


def _train_step(setup: Setup, accelerator, optimizer, schedule, params: list[torch.nn.Parameter], step: int) -> None:
    """One optimizer step, as the trainer's _step runs it (one process)."""
    cfg, scfg = setup.cfg, setup.cfg.stage(setup.stage)
    for micro in range(scfg.grad_accum):
        torch.manual_seed(derived_seed(cfg.seed, setup.stage, step, micro, 0))
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, setup.stage, step, micro, 0, "data"))
        accelerator.backward(step_loss(setup, gen) / scfg.grad_accum)
    accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def with_ratios(naive_row: dict, huvi_row: dict) -> dict:
    """The naive line plus naive / huvi ratios of peak memory and median step time."""
    basis = "gpu_peak_allocated_gib" if naive_row["gpu_peak_allocated_gib"] is not None else "cpu_peak_rss_gib"
    memory = time_ = None
    if naive_row[basis] and huvi_row[basis]:
        memory = round(naive_row[basis] / huvi_row[basis], 3)
    if naive_row["step_s_median"] and huvi_row["step_s_median"]:
        time_ = round(naive_row["step_s_median"] / huvi_row["step_s_median"], 3)
    return naive_row | {"naive_over_huvi_memory": memory, "naive_over_huvi_time": time_, "ratio_memory_basis": basis}


# estimating ------------------------------------------------------------------------------------


def optimizer_state_bytes(shapes: list[torch.Size], optimizer: str) -> int:
    """AdamW's two moments: fp32 (8 bytes a parameter), or bitsandbytes' 8-bit ones (2 bytes),
    which it uses only for tensors of at least 4096 elements (smaller ones keep fp32 states)."""
    total = 0
    for shape in shapes:
        n = shape.numel()
        total += 2 * n if optimizer == "adamw8bit" and n >= 4096 else 8 * n
    return total


def estimate(cfg: HuviConfig, stage: str, naive: bool, checkpointing: bool) -> dict:
    """Peak memory and FLOPs of one step from the meta run plus arithmetic (see docs/BENCHMARKS.md).

    peak = meta peak (bf16 weights, activations, bf16 LoRA gradients)
           + 4 bytes per trainable parameter (fp32 LoRA weights and gradients instead of bf16)
           + optimizer states (created at the first step, alive from then on).
    """
    memory = profile_memory(cfg, stage, naive, checkpointing)
    flops = count_flops(cfg, stage, naive, checkpointing, by_part=True)
    optimizer = "adamw" if naive else cfg.optim.optimizer
    trainable = sum(s.numel() for s in memory.trainable)
    states = optimizer_state_bytes(memory.trainable, optimizer)
    peak = memory.peak + 4 * trainable + states
    return _describe(cfg, stage, naive, checkpointing) | {
        "kind": "estimate",
        "precision": "bf16",
        "optimizer": optimizer,
        "params_trainable": trainable,
        "weights_gib": _gib(memory.resident),
        "kept_for_backward_gib": _gib(memory.after_forward - memory.resident),
        "activations_peak_gib": _gib(memory.peak - memory.resident),
        "lora_fp32_extra_gib": _gib(4 * trainable),
        "optimizer_states_gib": _gib(states),
        "estimated_peak_gib": _gib(peak),
        "kept_for_backward_by_part_gib": {part: _gib(n) for part, n in memory.kept_by_part.items()},
        "flops_per_step": flops.total,
        "forward_flops_by_part": flops.forward_by_part,
        "method": "meta device, one forward+backward, memory-efficient attention, bf16; plus arithmetic for fp32 LoRA and optimizer states",
    }


# command line ------------------------------------------------------------------------------------


def _configs(args: argparse.Namespace) -> Iterator[HuviConfig]:
    from huvi.cli import default_preset

    presets = preset_names() if args.all_presets else [args.preset or default_preset()]
    overrides = parse_overrides(args.set or [])
    for preset in presets:
        yield load_config(preset, overrides)


def run(args: argparse.Namespace, emit: Callable[[dict], None]) -> None:
    stages = STAGES if args.stage == "both" else (args.stage,)
    cuda = torch.cuda.is_available()
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name()) if cuda else None)
    if cuda and peak is None:
        logger.warning("%s is not in huvi.bench.PEAK_BF16_TFLOPS; give --peak-tflops to get MFU.", torch.cuda.get_device_name())
    for cfg in _configs(args):
        if not cuda and cfg.model.source != "tiny" and not args.estimate:
            logger.warning("%s on the CPU builds the full-size model in fp32 and takes minutes a step; use --preset tiny or --estimate.", cfg.preset)
        for stage in stages:
            if args.estimate:
                variants = [(False, cfg.model.gradient_checkpointing)]
                if cfg.model.gradient_checkpointing:
                    variants.append((False, False))
                if args.naive:
                    variants.append((True, False))
                for naive, checkpointing in variants:
                    emit(estimate(cfg, stage, naive, checkpointing))
                continue
            row = measure(cfg, stage, False, args.steps, args.warmup, peak)
            emit({"kind": "measured"} | row)
            if args.naive:
                emit({"kind": "measured"} | with_ratios(measure(cfg, stage, True, args.steps, args.warmup, peak), row))


def main(argv: list[str] | None = None) -> int:
    """`python -m huvi.bench ARGS` is `python -m huvi bench ARGS`: the CLI parses and prints."""
    from huvi.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
