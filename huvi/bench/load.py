"""`bench --load`: what loading a preset's model costs, measured as training and generating meet it.

The denoiser and the VAE and text encoder of the preset's model family load from its weights (Hub
ids or local folders; `python -m huvi make-test-weights DIR` writes full-size random ones) in the
weight dtype of its precision, exactly as `train`, `evaluate` and `generate` load them; then one
training step of the stage runs on the loaded UNet. The line gives the seconds each part took and
the process's peak resident host memory (Linux: VmHWM, reset before loading), which is what runs a
16 GB desktop out of memory.
"""

from __future__ import annotations

import gc
import time

from huvi.adapters import adapter_parameters
from huvi.bench.measure import environment, peak_rss, reset_peak_rss
from huvi.bench.step import build_setup, describe, gib, train_step
from huvi.config import HuviConfig
from huvi.families import family_for
from huvi.optim import make_lr_schedule, make_optimizer
from huvi.precision import make_accelerator, weight_dtype


def measure_load(cfg: HuviConfig, stage: str) -> dict:
    accelerator = make_accelerator(cfg.precision)
    device, dtype = accelerator.device, weight_dtype(accelerator.mixed_precision)
    row = environment(device) | describe(cfg, stage, False, cfg.model.gradient_checkpointing)
    family = family_for(cfg.model)
    row |= {"precision": accelerator.mixed_precision} | family.weight_sources()
    gc.collect()
    rss_reset = reset_peak_rss()
    start = time.perf_counter()
    unet = family.load_denoiser(dtype)
    unet_s = time.perf_counter() - start
    encoders = family.load_encoders(dtype)
    load_s = time.perf_counter() - start
    load_peak = peak_rss() if rss_reset else None
    del encoders  # training encodes its clips before the UNet trains and frees the encoders
    gc.collect()

    start = time.perf_counter()
    setup = build_setup(cfg, stage, False, device, dtype, unet=unet)
    params = adapter_parameters(setup.unet, stage)
    optimizer = make_optimizer(params, cfg.stage(stage), cfg.optim)
    schedule = make_lr_schedule(optimizer, cfg.stage(stage))
    setup.model, optimizer = accelerator.prepare(setup.unet, optimizer)
    setup.model.train()
    setup.autocast = accelerator.autocast
    train_step(setup, accelerator, optimizer, schedule, params, 0)
    step_s = time.perf_counter() - start
    row |= {
        "load_unet_s": round(unet_s, 2),
        "load_s": round(load_s, 2),  # UNet + VAE + text encoder, what generate loads
        "first_step_s": round(step_s, 2),  # adapters, optimizer and one step
        "cpu_peak_rss_load_gib": gib(load_peak),
        "cpu_peak_rss_gib": gib(peak_rss()) if rss_reset else None,  # loading and the first step
        "params_unet": sum(p.numel() for name, p in unet.named_parameters() if "lora_" not in name),
    }
    accelerator.free_memory()
    return row
