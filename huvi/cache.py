"""On-disk cache of VAE latents and prompt embeddings, encoded by the run's model family.

Each clip is encoded once per (file content, model, frame settings), plain and flipped, and the
prompt once per (text, model); the VAE and text encoder are loaded only when an entry is missing
and are dropped before the UNet trains. Entries live in `$HUVI_CACHE` (default
`~/.cache/huvi`), are written atomically, and an unreadable entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from huvi.category import Category, clip_frames, first_problem
from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.families import family_for
from huvi.families.base import Encoders
from huvi.io import file_digest, write_safetensors

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the stored layout or the encoding changes


def cache_dir() -> Path:
    return Path(os.environ.get("HUVI_CACHE", Path.home() / ".cache" / "huvi"))


@dataclass
class ClipLatents:
    latents: torch.Tensor  # (c, f, h, w), scaled by the VAE's scaling_factor
    flipped: torch.Tensor  # the same clip mirrored left-right before encoding


@dataclass
class CategoryLatents:
    prompt_embeds: torch.Tensor  # (tokens, dim)
    clips: dict[str, ClipLatents]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _model_id(cfg: HuviConfig) -> dict:
    return {"v": CACHE_VERSION} | family_for(cfg.model).cache_id()


def clip_key(path: Path, cfg: HuviConfig) -> str:
    d = cfg.data
    frames = {"w": d.width, "h": d.height, "stride": d.stride, "max": d.max_cached_frames, "min": d.frames}
    return _digest(file_digest(path), _model_id(cfg), frames)


def prompt_key(prompt: str, cfg: HuviConfig) -> str:
    return _digest(prompt.encode(), _model_id(cfg))


def _load(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """The entry at `path` if it holds finite tensors under `keys`, all of one shape; None (and the
    entry is rebuilt) when it is missing, unreadable, partial or corrupt."""
    if not path.is_file():
        return None
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        logger.warning("Cache entry %s is unreadable (%s); rebuilding it.", path.name, err)
        return None
    if set(stored) != set(keys) or len({t.shape for t in stored.values()}) != 1 or not all(t.isfinite().all() for t in stored.values()):
        logger.warning("Cache entry %s holds %s, not finite %s of one shape; rebuilding it.", path.name, sorted(stored), list(keys))
        return None
    return stored


def cache_category(
    category: Category,
    cfg: HuviConfig,
    load_encoders: Callable[[], Encoders],
    device: torch.device,
    show_progress: bool = True,
) -> CategoryLatents:
    """Latents of every clip and the prompt embedding, from the cache or freshly encoded."""
    root = cache_dir()
    encoders: Encoders | None = None

    def get_encoders() -> Encoders:
        nonlocal encoders
        if encoders is None:
            encoders = load_encoders()
            encoders.vae.to(device)
            encoders.text_encoder.to(device)
        return encoders

    prompt_path = root / "prompts" / f"{prompt_key(category.prompt, cfg)}.safetensors"
    stored = _load(prompt_path, ("embeds",))
    if stored is None:
        stored = {"embeds": get_encoders().encode_prompt(category.prompt, device)}
        write_safetensors(prompt_path, stored)
    prompt_embeds = stored["embeds"]

    latent_frames = family_for(cfg.model).latent_frames(cfg.data.frames)
    clips: dict[str, ClipLatents] = {}
    failures: list[str] = []
    for clip in tqdm(category.clips, desc="caching latents", unit="clip", disable=not show_progress):
        path = root / "latents" / f"{clip_key(clip.path, cfg)}.safetensors"
        stored = _load(path, ("latents", "flipped"))
        if stored is not None and stored["latents"].shape[1] < latent_frames:  # (c, f, h, w)
            logger.warning("Cache entry %s holds %d latent frames, fewer than %d; rebuilding it.", path.name, stored["latents"].shape[1], latent_frames)
            stored = None
        if stored is None:
            try:
                frames = clip_frames(clip.path, cfg.data)
            except HuviError as err:
                failures.append(str(err))
                continue
            stored = {
                "latents": get_encoders().encode_frames(frames, device),
                "flipped": get_encoders().encode_frames(frames[:, :, ::-1].copy(), device),
            }
            write_safetensors(path, stored, metadata={"clip": clip.name})
        clips[clip.name] = ClipLatents(stored["latents"], stored["flipped"])
    if failures:
        raise first_problem(failures, category.root)
    if encoders is not None:
        encoders = None  # free the VAE and text encoder before the UNet trains
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return CategoryLatents(prompt_embeds=prompt_embeds, clips=clips)
