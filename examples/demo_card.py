"""The demo model's card (models/demo/README.md), written by examples/pretrain_demo.py from its figures."""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextModel

CARD = """\
# huvi demo model

A small text-to-video model of the SD1.5 + AnimateDiff family (`UNetMotionModel`): {params}
parameters in all, {mb:.1f} MB of fp16 safetensors. It generates 8-frame 32x32 clips in which a
flat-coloured shape (square, disc, triangle; 8 colours) glides over a soft background, from a
first frame it is given (frame 0 held clean, as huvi trains and samples). It is meant for a
`demo` CPU preset (issue 15); it is not a model of real video.

    sd15-demo/        SD1.5 layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
    motion-adapter/   the AnimateDiff MotionAdapter (diffusers layout)
    figures.json      what examples/pretrain_demo.py printed

## Parts

| part | architecture | parameters |
|---|---|---|
| UNet | `UNet2DConditionModel`, blocks {unet_blocks}, 1 layer per block, cross-attention {text_dim} | {unet_params} |
| motion adapter | `MotionAdapter`, blocks {unet_blocks}, 1 motion layer per block, 2 heads | {motion_params} |
| VAE | `AutoencoderKL`, blocks {vae_blocks}, 4 latent channels: 32x32 -> 16x16x4, scaling factor {scale} | {vae_params} |
| text encoder | `CLIPTextModel`, {text_dim} wide, 2 layers, huvi's character-level CLIP tokenizer | {text_params} |

The scheduler is SD1.5's (PNDM over the scaled-linear DDPM schedule, epsilon prediction).

## Recipe (`python examples/pretrain_demo.py`, seed {seed})

- Data: {clips} clips of huvi.demo_data (seeds 0-{last}): shape, colour, size (22-36% of the
  frame), direction (left and right 35% each, up and down 15% each), speed (25-60% of the frame
  over the clip) and start drawn per clip; half the prompts name the direction ("a red disc moving
  right"), half do not ("a red disc moving", "a shape moving across the frame").
- VAE: {vae_steps} AdamW steps of 32 frames, lr 2e-3 (one-cycle), MSE plus 1e-6 KL.
- UNet, motion adapter and text encoder, all weights, together: {unet_steps} AdamW steps of
  {batch} clips, {schedule}, weight decay 0.01, gradient clipping 1; epsilon prediction
  on the DDPM schedule, timesteps uniform, the loss weighted by Min-SNR-5 (Hang et al. 2023), latent
  frame 0 held clean and out of the loss
  (huvi.dpo.denoising_errors through the family's noising), sparse-causal spatial attention, the
  prompt dropped for 10% of clips (classifier-free guidance); the motion modules' `proj_out`
  start at zero.
- Time, on CPU threads shared with other jobs: the VAE {vae_minutes:.0f} minutes; the UNet
  {unet_minutes:.0f} minutes {unet_span}.

## Figures

{figures}

Samples: from first frames of held-out clips (seeds from 1,000,500), {eval_steps} DDIM steps,
guidance {guidance}, through the family's loading path. *Moving*: huvi.track finds the shape
in every frame and its net displacement exceeds 0.15 frame widths (heights for up/down).
"""


def write_card(out: Path, figures: list[dict], seed: int, architecture: dict) -> None:
    """OUT/README.md: the model card of the demo model in OUT, from the script's `figures` and the
    `architecture` constants (unet_blocks, vae_blocks, text_dim, clips)."""

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    base = out / "sd15-demo"
    unet, vae = UNet2DConditionModel.from_pretrained(base, subfolder="unet"), AutoencoderKL.from_pretrained(base, subfolder="vae")
    text, motion = CLIPTextModel.from_pretrained(base, subfolder="text_encoder"), MotionAdapter.from_pretrained(out / "motion-adapter")
    sizes = {"unet_params": count(unet), "motion_params": count(motion), "vae_params": count(vae), "text_params": count(text)}
    by_stage = {row["stage"]: row for row in figures}
    unet_row = by_stage["unet"]
    timed_from = unet_row.get("seconds_from_step", unet_row["resumed_at_step"])  # the first runs' figures lack it: their time was this process's
    schedule = "lr 1e-3 (one cycle)"
    if unet_row.get("warm_restart_at_step"):
        schedule = f"lr 1e-3 (one cycle to step {unet_row['warm_restart_at_step']}, then a warm restart: a second cycle to {unet_row['restart_lr']:g})"
    lines = [f"- {row['stage']}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "stage") for row in figures]
    card = CARD.format(
        params=f"{sum(sizes.values()) / 1e6:.2f} M", mb=by_stage["save"]["bytes"] / 2**20, scale=vae.config.scaling_factor, seed=seed,
        last=architecture["clips"] - 1, vae_steps=by_stage["vae"]["steps"], unet_steps=unet_row["steps"], batch=unet_row["batch"], schedule=schedule,
        vae_minutes=by_stage["vae"]["seconds"] / 60, unet_minutes=unet_row["seconds"] / 60,
        unet_span=f"for its steps from {timed_from} on (earlier processes did not record their time)" if timed_from else "for all its steps", figures="\n".join(lines), eval_steps=by_stage["samples"]["steps"],
        guidance=by_stage["samples"]["guidance"], **architecture, **{k: f"{v:,}" for k, v in sizes.items()},
    )
    (out / "README.md").write_text(card)
