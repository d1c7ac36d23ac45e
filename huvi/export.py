"""Export a run's two LoRA adapters for other tools: diffusers, kohya (A1111/ComfyUI), AnimateDiff motion LoRA.

`export_run(RUN, fmt, out, merge)` is what the CLI and the app call. Without `merge`, `out` holds the
DPO adapter and `<out stem>.motion.safetensors` the motion adapter, so the two load as two named
adapters and the DPO one can be scaled alone. With `merge`, `out` holds their exact sum: each
adapter's alpha/rank scale is baked into its up weights, and a layer both adapt gets the two LoRAs
concatenated along the rank axis ([u1 u2] @ [d1; d2] = u1 d1 + u2 d2).

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

Every file carries string metadata: ModelSpec (`modelspec.*`), kohya's `ss_*` (kohya files), huvi's
own (`huvi.*`); `huvi.modelcard` writes the README.md beside it.

The category and prompt of a run are read from `RUN/run.json` when the run has one
(`{"category": "<category folder>", "prompt": "<prompt>", "pairs": <training pairs>}`); older runs
without it export with the category and prompt left empty and the pair count taken from the last DPO
checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import huvi
from huvi.adapters import DPO, MOTION, read_adapter_config
from huvi.config import AdapterConfig, HuviConfig, ModelConfig
from huvi.errors import HuviError
from huvi.io import write_safetensors, write_text
from huvi.modelcard import render_card
from huvi.runs import Run

logger = logging.getLogger(__name__)

FORMATS = ("diffusers", "kohya", "comfy-motion")

# peft module path of a temporal attention projection, and its parts in the original AnimateDiff naming
_TEMPORAL_ATTENTION = re.compile(
    r"(?P<block>(?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(?P<module>\d+)"
    r"\.transformer_blocks\.(?P<block_index>\d+)\.attn(?P<attn>[12])\.(?P<proj>to_q|to_k|to_v|to_out\.0)"
)


@dataclass
class ExportResult:
    files: list[Path]  # the safetensors written (one, or two without merge)
    card: Path  # the model card README.md written next to them
    metadata: dict[str, str]  # the metadata written into the file(s) (`out`'s; the sibling differs in its adapter fields)


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


@dataclass(frozen=True)
class Adapter:
    name: str  # motion or dpo
    cfg: AdapterConfig
    layers: Lora
    steps: int  # optimizer steps it was trained for
    created: datetime  # when its file was written (the end of its stage)


@dataclass(frozen=True)
class RunInfo:
    cfg: HuviConfig
    adapters: dict[str, Adapter]
    category: str  # the category folder's name; "" when the run does not record it
    prompt: str  # "" when the run does not record it
    pairs: int | None  # preference pairs the DPO stage trained on; None when not recorded


# reading a run ---------------------------------------------------------------------------------
def read_lora(path: Path) -> tuple[AdapterConfig, Lora, dict[str, str]]:
    """Settings, layers and metadata of an adapter file written by `huvi.adapters.save_adapter`."""
    cfg = read_adapter_config(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(path))  # MODULE.lora_A.weight, MODULE.lora_B.weight
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in tensors})
    layers = {m: LoraLayer(tensors[f"{m}.lora_A.weight"], tensors[f"{m}.lora_B.weight"], float(cfg.alpha)) for m in modules}
    return cfg, layers, meta


def _read_adapter(run: Run, name: str, planned_steps: int) -> Adapter:
    path = run.adapter_path(name)
    if not path.is_file():
        raise HuviError(
            f"{run.root} has no {name} adapter (adapters/{name}.safetensors) because its {name} stage has not "
            f"finished; finish it with `python -m huvi train --category CATEGORY --out {run.root} --resume` first."
        )
    cfg, layers, meta = read_lora(path)
    created = datetime.fromtimestamp(path.stat().st_mtime)
    return Adapter(name, cfg, layers, int(meta.get("huvi.steps", planned_steps)), created)


def _pairs_from_checkpoint(run: Run) -> int | None:
    dpo = [ref for ref in run.list_checkpoints() if ref.stage == DPO]
    if not dpo:
        return None
    return len(json.loads((dpo[-1].path / "state.json").read_text())["pairs"])


def read_run(run_dir: Path) -> RunInfo:
    run = Run(Path(run_dir))
    cfg = run.read_config()
    adapters = {name: _read_adapter(run, name, cfg.stage(name).steps) for name in (MOTION, DPO)}
    info = run.read_info()
    pairs = info.get("pairs")
    return RunInfo(
        cfg=cfg,
        adapters=adapters,
        category=Path(str(info.get("category", ""))).name,
        prompt=str(info.get("prompt", "")),
        pairs=pairs if isinstance(pairs, int) else _pairs_from_checkpoint(run),
    )


# combining -------------------------------------------------------------------------------------
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


# the three layouts -----------------------------------------------------------------------------
def _peft_config(lora: Lora) -> dict:
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


def diffusers_tensors(lora: Lora) -> dict[str, torch.Tensor]:
    out = {}
    for module, layer in lora.items():
        out[f"unet.{module}.lora_A.weight"] = layer.down
        out[f"unet.{module}.lora_B.weight"] = layer.up
    return out


def diffusers_metadata(lora: Lora) -> dict[str, str]:
    """diffusers' own LoRA metadata key: the LoraConfig with `unet.`-prefixed keys, read by `load_lora_weights`."""
    config = {f"unet.{key}": value for key, value in _peft_config(lora).items()}
    return {"lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True)}


def kohya_name(module: str) -> str:
    # down_blocks.0.resnets.1.conv1 -> lora_unet_down_blocks_0_resnets_1_conv1
    return "lora_unet_" + module.replace(".", "_")


def kohya_tensors(lora: Lora) -> dict[str, torch.Tensor]:
    out = {}
    for module, layer in lora.items():
        name = kohya_name(module)
        out[f"{name}.lora_down.weight"] = layer.down
        out[f"{name}.lora_up.weight"] = layer.up
        out[f"{name}.alpha"] = torch.tensor(layer.alpha, dtype=torch.float32)  # 0-dim; scale = alpha / rank
    return out


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


@dataclass(frozen=True)
class _Format:
    carries: Callable[[str], bool]  # whether the format can hold a layer (by module path)
    prepare: Callable[[Lora], Lora]  # the same updates in the form the format stores
    tensors: Callable[[Lora], dict[str, torch.Tensor]]
    implementation: str  # modelspec.implementation: the code whose module naming the keys follow
    left_out: str  # the layers the format cannot hold ("" for none)
    reason: str  # why, and where to get them instead


_FORMATS = {
    "diffusers": _Format(
        carries=lambda module: True,
        prepare=lambda lora: lora,
        tensors=diffusers_tensors,
        implementation="diffusers",
        left_out="",
        reason="",
    ),
    "kohya": _Format(
        carries=lambda module: ".motion_modules." not in module,
        prepare=share_alpha,
        tensors=kohya_tensors,
        implementation="https://github.com/Stability-AI/generative-models",
        left_out="the temporal (AnimateDiff motion-module) layers",
        reason=(
            "diffusers' kohya converter turns `motion_modules` into `motion.modules` and drops those keys, and kohya "
            "naming has no convention for AnimateDiff's motion modules (ComfyUI-AnimateDiff-Evolved takes them only "
            "as a motion LoRA); export --format comfy-motion for them"
        ),
    ),
    "comfy-motion": _Format(
        carries=lambda module: _TEMPORAL_ATTENTION.fullmatch(module) is not None,
        prepare=bake,
        tensors=comfy_motion_tensors,
        implementation="https://github.com/guoyww/AnimateDiff",
        left_out="every spatial (SD1.5 UNet) layer and every temporal layer other than the attention projections",
        reason=(
            "an AnimateDiff motion LoRA holds only the motion modules' to_q/to_k/to_v/to_out; "
            "export --format kohya for the spatial layers, or --format diffusers for everything"
        ),
    ),
}


# metadata --------------------------------------------------------------------------------------
def huvi_version() -> str:
    try:
        return importlib.metadata.version("huvi")
    except importlib.metadata.PackageNotFoundError:
        return huvi.__version__


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)  # 32.0 -> "32", 0.5 -> "0.5"


_HF_CACHE_REPO = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)")


def hub_id(source: str, field: str) -> tuple[str, str]:
    """(Hub id, local folder or "") of a model.base or model.motion_adapter setting, for cards and
    metadata, which must name a Hub id. A Hub id is itself; a folder of the Hugging Face cache
    (`.../models--OWNER--NAME/snapshots/...`) names its repository; any other folder cannot say
    which Hub model it holds, so the architecture's own Hub id (the setting's default) stands for
    it, and the folder is named beside it."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return source, ""
    folder = str(path.resolve())
    match = next((m for part in path.resolve().parts if (m := _HF_CACHE_REPO.fullmatch(part))), None)
    if match:
        return f"{match['owner']}/{match['name']}", folder
    return getattr(ModelConfig(), field), folder


def _metadata(run: RunInfo, fmt: str, names: list[str], lora: Lora, out: Path) -> dict[str, str]:
    cfg, adapters = run.cfg, [run.adapters[n] for n in names]
    merged = len(adapters) > 1
    baked = merged or fmt == "comfy-motion"
    tiny = cfg.model.source == "tiny"
    base, base_folder = ("huvi tiny random SD1.5-style UNet (huvi.families.sd15.tiny)", "") if tiny else hub_id(cfg.model.base, "base")
    motion_adapter, motion_folder = ("huvi tiny random motion adapter (huvi.families.sd15.tiny)", "") if tiny else hub_id(cfg.model.motion_adapter, "motion_adapter")
    what = " + ".join(names)
    description = (
        f"huvi {what} LoRA for AnimateDiff (SD1.5 UNet + motion adapter {motion_adapter}), {fmt} layout"
        f"{', scale baked into the up weights' if baked else ''}. Category: {run.category or 'not recorded'}."
    )
    meta = {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": _FORMATS[fmt].implementation,
        "modelspec.title": f"huvi {run.category or out.stem} ({what})",
        "modelspec.description": description,
        "modelspec.resolution": f"{cfg.data.width}x{cfg.data.height}",
        "modelspec.trigger_phrase": run.prompt,
        "modelspec.prediction_type": "epsilon",
        "modelspec.date": max(a.created for a in adapters).isoformat(timespec="seconds"),
        "modelspec.tags": "animatediff,text-to-video,lora,diffusion-dpo,huvi",
        "modelspec.usage_hint": f"AnimateDiff video LoRA: apply with the motion adapter {motion_adapter}; prompt: {run.prompt}",
        "huvi.version": huvi_version(),
        "huvi.format": fmt,
        "huvi.adapters": "+".join(names),
        "huvi.merged": str(merged).lower(),
        "huvi.scale_baked": str(baked).lower(),
        "huvi.category": run.category,
        "huvi.prompt": run.prompt,
        "huvi.base_model": base,
        "huvi.base_model_folder": base_folder,
        "huvi.motion_adapter": motion_adapter,
        "huvi.motion_adapter_folder": motion_folder,
        "huvi.model_source": cfg.model.source,
        "huvi.preset": cfg.preset,
        "huvi.attention": cfg.model.attention,
        "huvi.frames": str(cfg.data.frames),
        "huvi.rank": "+".join(str(a.cfg.rank) for a in adapters),
        "huvi.alpha": "+".join(_number(a.cfg.alpha) for a in adapters),
        "huvi.steps": "+".join(str(a.steps) for a in adapters),
        "huvi.beta": _number(cfg.dpo.beta),
        "huvi.pairs": "" if run.pairs is None else str(run.pairs),
        "huvi.layers": str(len(lora)),
        "huvi.left_out": _FORMATS[fmt].left_out or "nothing",
    }
    for adapter in run.adapters.values():
        meta |= {
            f"huvi.{adapter.name}.rank": str(adapter.cfg.rank),
            f"huvi.{adapter.name}.alpha": _number(adapter.cfg.alpha),
            f"huvi.{adapter.name}.steps": str(adapter.steps),
            f"huvi.{adapter.name}.targets": adapter.cfg.targets,
        }
    if fmt == "diffusers":
        meta |= diffusers_metadata(lora)
    if fmt == "kohya":
        ranks, alphas = {layer.rank for layer in lora.values()}, {layer.alpha for layer in lora.values()}
        meta |= {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
            "ss_network_alpha": _number(alphas.pop()) if len(alphas) == 1 else "Dynamic",
            "ss_base_model_version": "sd_v1",
            "ss_v2": "False",
            "ss_sd_model_name": base,
            "ss_output_name": out.stem,
            "ss_steps": str(sum(a.steps for a in adapters)),
            "ss_resolution": f"({cfg.data.width}, {cfg.data.height})",
            "ss_training_comment": description,
        }
    return meta


# export ----------------------------------------------------------------------------------------
def motion_sibling(out: Path) -> Path:
    """Where the motion adapter goes without merge: guitar.safetensors -> guitar.motion.safetensors."""
    return out.with_name(f"{out.stem}.motion.safetensors")


def _check_request(fmt: str, out: Path) -> None:
    if fmt not in FORMATS:
        raise HuviError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    if out.suffix != ".safetensors":
        raise HuviError(f"The export file {out} must end in .safetensors; pass e.g. --out {out.with_suffix('.safetensors')}.")
    if out.is_dir():
        raise HuviError(f"{out} is a folder; pass a file name ending in .safetensors inside it.")


def export_run(run_dir: Path, fmt: str, out: Path, merge: bool = False) -> ExportResult:
    """Write the run's adapters in format `fmt` to `out` (and `<out stem>.motion.safetensors` without
    `merge`), with metadata, and a model card README.md beside them."""
    out = Path(out)
    _check_request(fmt, out)
    run = read_run(Path(run_dir))
    spec = _FORMATS[fmt]
    plan = {out: [MOTION, DPO]} if merge else {out: [DPO], motion_sibling(out): [MOTION]}
    contents = {}
    for path, names in plan.items():
        layers = [run.adapters[n].layers for n in names]
        lora = merge_loras(*layers) if merge else layers[0]
        lora = {module: layer for module, layer in lora.items() if spec.carries(module)}
        if not lora:
            raise HuviError(
                f"The {' + '.join(names)} adapter of this run has only layers the {fmt} format leaves out "
                f"({spec.left_out}); export with --merge, or in another format."
            )
        contents[path] = (names, spec.prepare(lora))
    written = {path: _metadata(run, fmt, names, lora, path) for path, (names, lora) in contents.items()}
    for path, (names, lora) in contents.items():
        write_safetensors(path, spec.tensors(lora), metadata=written[path])
        logger.info("wrote %s (%s, %d layers)", path, "+".join(names), len(lora))
    card = out.parent / "README.md"
    files = {path.name: meta["huvi.adapters"] for path, meta in written.items()}
    write_text(card, render_card(fmt, files, written[out], spec.left_out, spec.reason))
    return ExportResult(files=list(written), card=card, metadata=written[out])
