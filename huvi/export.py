"""Export a run's two LoRA adapters for other tools, in the layouts its model family offers.

`export_run(RUN, fmt, out, merge)` is what the CLI and the app call. Without `merge`, `out` holds the
DPO adapter and `<out stem>.motion.safetensors` the motion adapter, so the two load as two named
adapters and the DPO one can be scaled alone. With `merge`, `out` holds their exact sum: each
adapter's alpha/rank scale is baked into its up weights, and a layer both adapt gets the two LoRAs
concatenated along the rank axis ([u1 u2] @ [d1; d2] = u1 d1 + u2 d2).

Each model family has its own key layouts (`ModelFamily.export_formats`, named in
huvi.families.EXPORT_FORMATS; SD1.5's: diffusers, kohya, comfy-motion, in huvi.families.sd15.export;
Wan's: diffusers, comfy, in huvi.families.wan.export); the layer arithmetic is in huvi.lora.

Every file carries string metadata: ModelSpec (`modelspec.*`), kohya's `ss_*` (kohya files), huvi's
own (`huvi.*`); the family's `render_card` writes the README.md beside it.

The category and prompt of a run are read from `RUN/run.json` when the run has one
(`{"category": "<category folder>", "prompt": "<prompt>", "pairs": <training pairs>}`); older runs
without it export with the category and prompt left empty and the pair count taken from the last DPO
checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import huvi
from huvi.adapters import DPO, MOTION
from huvi.config import AdapterConfig, HuviConfig
from huvi.errors import HuviError
from huvi.families import ALL_EXPORT_FORMATS, EXPORT_FORMATS, family_for
from huvi.families.base import ModelFamily
from huvi.io import write_safetensors, write_text
from huvi.lora import Lora, merge_loras, read_lora
from huvi.runs import Run

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    files: list[Path]  # the safetensors written (one, or two without merge)
    card: Path  # the model card README.md written next to them
    metadata: dict[str, str]  # the metadata written into the file(s) (`out`'s; the sibling differs in its adapter fields)


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


# metadata --------------------------------------------------------------------------------------
def huvi_version() -> str:
    try:
        return importlib.metadata.version("huvi")
    except importlib.metadata.PackageNotFoundError:
        return huvi.__version__


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)  # 32.0 -> "32", 0.5 -> "0.5"


def _metadata(run: RunInfo, family: ModelFamily, fmt: str, names: list[str], lora: Lora, out: Path) -> dict[str, str]:
    cfg, adapters, spec = run.cfg, [run.adapters[n] for n in names], family.export_formats[fmt]
    merged = len(adapters) > 1
    baked = merged or spec.bakes_scale
    what = " + ".join(names)
    model = family.export_metadata(fmt, what, baked, run.category, run.prompt)
    description = model.pop("description")
    meta = {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.implementation": spec.implementation,
        "modelspec.title": f"huvi {run.category or out.stem} ({what})",
        "modelspec.description": description,
        "modelspec.resolution": f"{cfg.data.width}x{cfg.data.height}",
        "modelspec.trigger_phrase": run.prompt,
        "modelspec.date": max(a.created for a in adapters).isoformat(timespec="seconds"),
        "huvi.version": huvi_version(),
        "huvi.format": fmt,
        "huvi.adapters": "+".join(names),
        "huvi.merged": str(merged).lower(),
        "huvi.scale_baked": str(baked).lower(),
        "huvi.category": run.category,
        "huvi.prompt": run.prompt,
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
        "huvi.left_out": spec.left_out or "nothing",
    } | model
    for adapter in run.adapters.values():
        meta |= {
            f"huvi.{adapter.name}.rank": str(adapter.cfg.rank),
            f"huvi.{adapter.name}.alpha": _number(adapter.cfg.alpha),
            f"huvi.{adapter.name}.steps": str(adapter.steps),
            f"huvi.{adapter.name}.targets": adapter.cfg.targets,
        }
    meta |= spec.metadata(lora)
    if fmt == "kohya":
        ranks, alphas = {layer.rank for layer in lora.values()}, {layer.alpha for layer in lora.values()}
        meta |= {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
            "ss_network_alpha": _number(alphas.pop()) if len(alphas) == 1 else "Dynamic",
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


def run_formats(run_dir: Path) -> tuple[str, ...]:
    """The export formats of the run's model family, in the order offered (read from its config.yaml alone)."""
    return EXPORT_FORMATS[Run(Path(run_dir)).read_config().model.family]


def _check_request(family: ModelFamily, fmt: str, out: Path) -> None:
    if fmt not in family.export_formats:
        what = f"The {family.name} model family has no export format" if fmt in ALL_EXPORT_FORMATS else "Unknown export format"
        raise HuviError(f"{what} {fmt!r}; choose one of: {', '.join(family.export_formats)}.")
    if out.suffix != ".safetensors":
        raise HuviError(f"The export file {out} must end in .safetensors; pass e.g. --out {out.with_suffix('.safetensors')}.")
    if out.is_dir():
        raise HuviError(f"{out} is a folder; pass a file name ending in .safetensors inside it.")


def export_run(run_dir: Path, fmt: str, out: Path, merge: bool = False) -> ExportResult:
    """Write the run's adapters in format `fmt` to `out` (and `<out stem>.motion.safetensors` without
    `merge`), with metadata, and a model card README.md beside them."""
    out = Path(out)
    run = read_run(Path(run_dir))
    family = family_for(run.cfg.model)
    _check_request(family, fmt, out)
    spec = family.export_formats[fmt]
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
    written = {path: _metadata(run, family, fmt, names, lora, path) for path, (names, lora) in contents.items()}
    for path, (names, lora) in contents.items():
        write_safetensors(path, spec.tensors(lora), metadata=written[path])
        logger.info("wrote %s (%s, %d layers)", path, "+".join(names), len(lora))
    card = out.parent / "README.md"
    files = {path.name: meta["huvi.adapters"] for path, meta in written.items()}
    write_text(card, family.render_card(fmt, files, written[out]))
    return ExportResult(files=list(written), card=card, metadata=written[out])
