"""Memory and FLOPs of one step counted on the meta device: shapes only, no weights, any machine.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one forward + backward of the
step. Model FLOPs leave out the recomputation of gradient checkpointing (MFU is against them);
hardware FLOPs include it (HFU). `estimate` gives the step's peak memory as the meta run sees it:
every tensor an op allocates is counted while it lives, attention runs as the memory-efficient
kernel a GPU uses, and weights and activations are bf16 as under autocast; fp32 LoRA weights and
the optimizer's states are added by arithmetic (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.module_tracker import ModuleTracker

from huvi.adapters import adapter_parameters
from huvi.bench.step import Setup, build_setup, describe, gib, step_loss
from huvi.config import HuviConfig
from huvi.families.base import ModelFamily


def _memory_efficient_sdpa(sdpa: Callable) -> Callable:
    """`sdpa` that runs unmasked attention as the memory-efficient kernel, which keeps no
    (queries x keys) score matrix, as on a GPU; on the meta device PyTorch picks the math path."""

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kwargs):
        # diffusers' attention dispatcher (Wan's processors) passes enable_gqa=False explicitly
        if attn_mask is not None or dropout_p or is_causal or enable_gqa or kwargs:
            return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, **kwargs)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, grad, scale=scale)[0]  # (b, heads, n, d)

    return attention


def step_parts(family: ModelFamily) -> list[tuple[str, re.Pattern]]:
    """(part of a step, test on a module name as ModuleTracker and FlopCounterMode write it), the family's."""
    return [(part, re.compile(pattern)) for part, pattern in family.step_parts]


def step_part(parts: list[tuple[str, re.Pattern]], module_names: Iterable[str]) -> str:
    """The part of the step that modules `module_names` (the running module and its parents) belong to."""
    names = list(module_names)
    return next((part for part, pattern in parts if any(pattern.fullmatch(n) for n in names)), "other")


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
    parts = {part: sum(v for n, v in counts.items() if pattern.fullmatch(n)) for part, pattern in step_parts(setup.family)}
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
        parts = step_parts(setup.family)
        with _LiveBytes(resident, lambda: step_part(parts, tracker.parents) if in_forward else "backward") as live:
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
    return describe(cfg, stage, naive, checkpointing) | {
        "kind": "estimate",
        "precision": "bf16",
        "optimizer": optimizer,
        "params_trainable": trainable,
        "weights_gib": gib(memory.resident),
        "kept_for_backward_gib": gib(memory.after_forward - memory.resident),
        "activations_peak_gib": gib(memory.peak - memory.resident),
        "lora_fp32_extra_gib": gib(4 * trainable),
        "optimizer_states_gib": gib(states),
        "estimated_peak_gib": gib(peak),
        "kept_for_backward_by_part_gib": {part: gib(n) for part, n in memory.kept_by_part.items()},
        "flops_per_step": flops.total,
        "forward_flops_by_part": flops.forward_by_part,
        "method": "meta device, one forward+backward, memory-efficient attention, bf16; plus arithmetic for fp32 LoRA and optimizer states",
    }


# command line ------------------------------------------------------------------------------------
