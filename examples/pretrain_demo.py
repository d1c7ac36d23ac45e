"""Train the demo model: a small SD1.5 + AnimateDiff video model of moving shapes (for a `demo` preset).

It has the SD1.5 family's architecture at a few million parameters: its own VAE (32x32 frames ->
16x16x4 latents), a small CLIP text encoder over huvi's character-level tokenizer, and an SD1.5-style
UNet with an AnimateDiff motion adapter, assembled into `UNetMotionModel` as the family assembles
the real ones. It learns from clips of huvi.demo_data (a square, disc or triangle of one of 8 colours
gliding left, right, up or down at various speeds; prompts that name the direction or leave it out).

    python examples/pretrain_demo.py [--out models/demo] [--seed 0] [--vae-steps N] [--unet-steps N]

Stages, each printing its figures (one JSON line each, also kept in OUT/figures.json):

1. VAE: reconstruction (MSE) plus a small KL term on single frames; PSNR of held-out frames, and the
   scaling factor that gives the latents unit variance (as 0.18215 does for SD1.5's VAE).
2. UNet + text encoder, all weights: epsilon prediction on the DDPM schedule of SD1.5 with the
   Min-SNR-5 loss weight; latent frame 0 held clean and left out of the loss as huvi trains
   (huvi.dpo.denoising_errors through the family's noising); the prompt dropped for 10% of clips so
   classifier-free guidance works. --check-every N samples 8 held-out clips every N steps. With
   --work a rerun resumes it; asked for more steps than a finished run had, it goes on from that
   run's weights and optimizer with a second, lower cycle (a warm restart, as in SGDR).
3. Written as diffusers folders (fp16 safetensors): OUT/sd15-demo (model_index.json, unet/, vae/,
   text_encoder/, tokenizer/, scheduler/) and OUT/motion-adapter, with a model card (OUT/README.md).
4. Loaded back through the family's own loading path (`from_pretrained` on the folders) and sampled from held-out
   first frames; huvi.track measures each clip: the share of clips whose shape is tracked in every frame
   and moves (|dx| > 0.15 frame widths, or |dy| for up/down prompts), and which way.

Everything is seeded; one CPU thread unless OMP_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "examples"))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from demo_card import write_card
from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from huvi.config import ModelConfig
from huvi.demo_data import DIRECTIONS, shape_clip
from huvi.dpo import denoising_errors
from huvi.families import family_for
from huvi.families.sd15 import tiny
from huvi.families.sd15.diffusion import SD15_SCHEDULER
from huvi.families.sd15.full_size import SD15_PNDM
from huvi.families.sd15.models import Encoders, assemble_unet
from huvi.track import motion_stats, object_kept

logger = logging.getLogger("pretrain_demo")

SIZE, FRAMES = 32, 8  # the demo preset's data.width/height and data.frames
TEXT_DIM = 32
UNET2D = dict(tiny.UNET2D, block_out_channels=(48, 96), cross_attention_dim=TEXT_DIM)
MOTION = dict(tiny.MOTION, block_out_channels=(48, 96))
VAE = dict(tiny.VAE, block_out_channels=(32, 64), scaling_factor=1.0)  # 2x downsampling; the factor is measured after training
TEXT = dict(tiny.TEXT, hidden_size=TEXT_DIM, projection_dim=TEXT_DIM)
TRAIN_CLIPS = 4000  # seeds 0..3999; held-out clips use seeds from HELD_OUT on
ARCHITECTURE = {"unet_blocks": UNET2D["block_out_channels"], "vae_blocks": VAE["block_out_channels"], "text_dim": TEXT_DIM, "clips": TRAIN_CLIPS}  # for the card
HELD_OUT = 1_000_000
MOVING = 0.15  # |displacement| in frame sizes that counts as moving (huvi.track)
PROMPT_DROP = 0.1
CHECKPOINT_EVERY = 50  # UNet steps between checkpoints in --work (a few minutes of CPU)
LR = 1e-3  # the UNet stage's peak learning rate (one cycle)
RESTART_LR = 3e-4  # the peak of a warm restart's second cycle (--unet-steps raised after a finished run)
MIN_SNR_GAMMA = 5.0  # Min-SNR loss weighting (Hang et al. 2023, eq. 10 for epsilon prediction): 3x faster convergence


def frames_tensor(clips: np.ndarray) -> torch.Tensor:
    """(n, f, h, w, 3) uint8 -> (n f, 3, h, w) in [-1, 1]."""
    return torch.from_numpy(clips).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / mse)


def train_vae(clips: np.ndarray, held_out: np.ndarray, steps: int, seed: int) -> tuple[AutoencoderKL, dict]:
    """The VAE trained on single frames of `clips`; its held-out PSNR and latent scaling factor."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE)
    frames, test = frames_tensor(clips), frames_tensor(held_out)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    start, bar = time.perf_counter(), tqdm(range(steps), desc="vae", unit="step")
    for _ in bar:
        batch = frames[torch.randint(len(frames), (32,), generator=gen)]
        post = vae.encode(batch).latent_dist
        recon = vae.decode(post.sample(generator=gen)).sample
        mse = (recon - batch).pow(2).mean()
        loss = mse + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(mse=f"{mse.item():.4f}")
    vae.eval()
    with torch.no_grad():
        means = vae.encode(test).latent_dist.mean
        recon = vae.decode(means).sample
    scale = 1.0 / means.std().item()
    vae.register_to_config(scaling_factor=round(scale, 4))
    figures = {"stage": "vae", "steps": steps, "held_out_psnr_db": round(psnr(recon, test), 2), "scaling_factor": round(scale, 4), "seconds": round(time.perf_counter() - start)}
    return vae, figures


def min_snr_weight(schedule: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """min(SNR, gamma) / SNR per timestep: the Min-SNR-gamma weight of an epsilon-prediction loss
    (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 10)."""
    alpha_bar = schedule.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=MIN_SNR_GAMMA) / snr


@torch.no_grad()
def sample_check(unet, encoders: Encoders, family, clips: int = 8, steps: int = 15, guidance: float = 3.0) -> dict:
    """Mid-training check on `clips` held-out first frames (prompts naming the direction): the share
    of samples in which huvi.track finds the shape in every frame at 0.5-2x its first area, and of
    those moving the way asked."""
    unet.eval()
    sampler, cpu = family.sampler("ddim"), torch.device("cpu")
    uncond = encoders.encode_prompt("", cpu)
    tracked = moved = 0
    for i in range(clips):
        source = shape_clip(HELD_OUT + 900 + i, frames=FRAMES, size=SIZE)
        first = encoders.encode_frames(source.frames[:1], cpu)[:, 0]  # (c, h, w)
        text = encoders.encode_prompt(f"a {source.colour} {source.shape} moving {source.direction}", cpu)
        frames = encoders.decode(family.sample(unet, sampler, first, text, uncond, FRAMES, steps, guidance, torch.Generator().manual_seed(i), show_progress=False))
        stats, kept = motion_stats(frames), object_kept(frames, side_change=math.sqrt(2))  # area within 0.5-2x of frame 0's
        ux, uy = DIRECTIONS[source.direction]
        tracked += kept
        moved += kept and (ux * stats.dx + uy * stats.dy) > MOVING
    unet.train()
    return {"tracked_share": tracked / clips, "moves_as_asked_share": moved / clips}


def save_checkpoint(folder: Path, unet, text_encoder, opt, sched, gen: torch.Generator, losses: list[float], plan: dict, restart_at: int | None, seconds: float) -> None:
    """The UNet stage's state after len(losses) steps: weights as safetensors, the optimizer, schedule
    and random stream beside them; written to a temporary folder, then swapped in whole."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {f"unet.{k}": v for k, v in unet.state_dict().items()} | {f"text_encoder.{k}": v for k, v in text_encoder.state_dict().items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "weights.safetensors")
    torch.save({"optimizer": opt.state_dict(), "schedule": sched.state_dict(), "generator": gen.get_state(), "losses": losses, "plan": plan, "restart_at": restart_at, "seconds": seconds}, tmp / "state.pt")
    old = folder.with_name(folder.name + ".old")  # the previous checkpoint stays whole until the new one is in place
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, plan: dict) -> dict | None:
    """The state of a checkpoint to go on from under `plan` (steps, batch, seed): one made with the
    same plan (a resume), or one that finished a shorter plan of the same batch and seed (a warm
    restart, marked "restart_at": its step count); None when there is neither."""
    if not (folder / "state.pt").is_file() and (folder.with_name(folder.name + ".old") / "state.pt").is_file():
        folder = folder.with_name(folder.name + ".old")  # killed between the two renames of save_checkpoint
    if not (folder / "state.pt").is_file():
        return None
    state = torch.load(folder / "state.pt", weights_only=False)
    done, made_for = len(state["losses"]), state["plan"]
    same = {k: v for k, v in made_for.items() if k != "steps"} == {k: v for k, v in plan.items() if k != "steps"}
    if made_for == plan:
        logger.warning("resuming the UNet stage at step %d of %d from %s", done, plan["steps"], folder)
    elif same and done == made_for["steps"] < plan["steps"]:
        logger.warning("going on from the finished %d-step UNet stage in %s: a warm restart to step %d", done, folder, plan["steps"])
        state["restart_at"], state["schedule"] = done, None
    else:
        logger.warning("not resuming from %s: it was made for %s, not %s", folder, made_for, plan)
        return None
    state["weights"] = load_file(folder / "weights.safetensors")
    return state


def one_cycle(opt: torch.optim.Optimizer, steps: int, restart_at: int | None) -> torch.optim.lr_scheduler.OneCycleLR:
    """The UNet stage's schedule: one cycle to LR over `steps`; after a warm restart at step k (more
    steps asked of a finished stage), a second cycle to RESTART_LR over the steps from k on."""
    if restart_at is None:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.05)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=RESTART_LR, total_steps=steps - restart_at, pct_start=0.05)


def train_unet(
    vae: AutoencoderKL, clips: np.ndarray, prompts: list[str], steps: int, batch: int, seed: int, check_every: int = 0, work: Path | None = None
) -> tuple[dict, dict]:
    """UNet2D + motion adapter + text encoder trained together on the clips' latents (module docstring).
    With `work`, a checkpoint is kept in WORK/unet-checkpoint every CHECKPOINT_EVERY steps and a rerun
    with the same steps, batch and seed goes on from it (the run takes hours on a CPU)."""
    torch.manual_seed(seed)
    tokenizer = tiny.build_tokenizer()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **ids, **TEXT))
    unet2d, adapter = UNet2DConditionModel(**UNET2D), MotionAdapter(**MOTION)
    for module in adapter.modules():  # untrained temporal modules start as the identity (REFERENCE §4)
        if hasattr(module, "proj_out") and isinstance(module.proj_out, torch.nn.Linear):
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    cfg = ModelConfig(source="tiny", gradient_checkpointing=False)  # sparse-causal attention, as the demo preset
    unet = assemble_unet(unet2d, adapter, cfg).train()
    family = family_for(cfg)
    family.schedule = DDPMScheduler(**SD15_SCHEDULER)
    with torch.no_grad():
        latents = torch.cat([vae.encode(frames_tensor(chunk)).latent_dist.mean for chunk in np.array_split(clips, max(1, len(clips) // 64))])
    latents = (latents * vae.config.scaling_factor).unflatten(0, clips.shape[:2]).transpose(1, 2).contiguous()  # (n, c, f, h, w)
    tokens = tokenizer(prompts + [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed + 1)
    plan, checkpoint = {"steps": steps, "batch": batch, "seed": seed}, work / "unet-checkpoint" if work else None
    state = load_checkpoint(checkpoint, plan) if checkpoint else None
    restart_at = state.get("restart_at") if state else None
    if state is None:
        sched, losses = one_cycle(opt, steps, None), []
    else:
        unet.load_state_dict({k.removeprefix("unet."): v for k, v in state["weights"].items() if k.startswith("unet.")})
        text_encoder.load_state_dict({k.removeprefix("text_encoder."): v for k, v in state["weights"].items() if k.startswith("text_encoder.")})
        if state["schedule"] is None:  # a warm restart: the new cycle's rates replace the finished one's
            opt.load_state_dict(state["optimizer"])
            sched = one_cycle(opt, steps, restart_at)
        else:  # a resume: the schedule first, then the optimizer's own state (its rates) over it
            sched = one_cycle(opt, steps, restart_at)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["schedule"])
        gen.set_state(state["generator"])
        losses = state["losses"]
    start, resumed = time.perf_counter(), len(losses)
    before = state.get("seconds", 0.0) if state else 0.0  # the stage's time in earlier processes
    timed_from = resumed if state and "seconds" not in state else 0  # checkpoints older than this record no time
    bar = tqdm(range(len(losses), steps), desc="unet", unit="step", initial=len(losses), total=steps)
    for _ in bar:
        index = torch.randint(len(latents), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < PROMPT_DROP
        text = text_encoder(tokens[torch.where(drop, len(prompts), index)])[0]  # (b, tokens, dim)
        x = latents[index]
        noise = torch.randn(x.shape, generator=gen)
        timesteps = family.sample_timesteps(batch, gen)
        loss = (min_snr_weight(family.schedule, timesteps) * denoising_errors(unet, family, x, noise, timesteps, text)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if check_every and (len(losses) % check_every == 0):
            row = {"step": len(losses), "loss_mean_last_50": round(float(np.mean(losses[-50:])), 4)} | sample_check(unet, Encoders(vae, text_encoder, tokenizer), family)
            logger.warning("unet check %s", json.dumps(row))
        if checkpoint and (len(losses) % CHECKPOINT_EVERY == 0 or len(losses) == steps):  # the last one for a warm restart
            save_checkpoint(checkpoint, unet, text_encoder, opt, sched, gen, losses, plan, restart_at, before + time.perf_counter() - start)
    figures = {
        "stage": "unet", "steps": steps, "batch": batch, "final_loss_mean_last_100": round(float(np.mean(losses[-100:])), 4),
        "first_loss_mean_first_20": round(float(np.mean(losses[:20])), 4), "seconds": round(before + time.perf_counter() - start),
        "resumed_at_step": resumed, "seconds_from_step": timed_from,  # "seconds" covers the steps from seconds_from_step on
    } | ({"warm_restart_at_step": restart_at, "restart_lr": RESTART_LR} if restart_at else {})
    # The video UNet's state dict is the UNet's and the adapter's, under the same names (assemble_unet).
    state = unet.state_dict()
    unet2d.load_state_dict({k: state[k] for k in unet2d.state_dict()})
    adapter.load_state_dict({k: state[k] for k in adapter.state_dict()})
    return {"unet": unet2d, "adapter": adapter, "text_encoder": text_encoder.eval(), "tokenizer": tokenizer}, figures


def save(out: Path, vae: AutoencoderKL, parts: dict) -> dict:
    """OUT/sd15-demo (SD1.5 layout) and OUT/motion-adapter, fp16 safetensors; their sizes in bytes.
    The scheduler is SD1.5's own (PNDM over the training schedule), which huvi reads as DDPM."""
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=parts["unet"], scheduler=PNDMScheduler(**SD15_PNDM),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(out / "sd15-demo", safe_serialization=True)
    parts["adapter"].to(torch.float16).save_pretrained(out / "motion-adapter", safe_serialization=True)
    return {"stage": "save", "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


def _stats_row(stats, axis: str) -> tuple[bool, float]:
    moved = stats.dx if axis == "x" else stats.dy
    return stats.tracked == 1.0 and abs(moved) > MOVING, moved


@torch.no_grad()
def evaluate(out: Path, clips: int, steps: int, guidance: float, seed: int) -> dict:
    """Sample from held-out first frames through the family's loading path (`from_pretrained` on the
    folders, as a preset naming them loads them); huvi.track's figures."""
    family = family_for(ModelConfig(base=str(out / "sd15-demo"), motion_adapter=str(out / "motion-adapter"), gradient_checkpointing=False))
    unet, encoders = family.load_denoiser().eval(), family.load_encoders()
    sampler = family.sampler("ddim")
    uncond = encoders.encode_prompt("", torch.device("cpu"))
    rows = {"generic": [], "right": [], "left": [], "up": [], "down": []}
    for i in tqdm(range(clips), desc="samples", unit="clip"):
        source = shape_clip(HELD_OUT + 500 + i, frames=FRAMES, size=SIZE)
        first = encoders.encode_frames(source.frames[:1], torch.device("cpu"))[:, 0]  # (c, h, w)
        asks = {"generic": f"a {source.colour} {source.shape} moving"} | {d: f"a {source.colour} {source.shape} moving {d}" for d in ("right", "left")}
        if i % 2 == 0:
            asks |= {d: f"a {source.colour} {source.shape} moving {d}" for d in ("up", "down")}
        for key, prompt in asks.items():
            latents = family.sample(unet, sampler, first, encoders.encode_prompt(prompt, torch.device("cpu")), uncond, FRAMES, steps, guidance,
                                    torch.Generator().manual_seed(seed + i), show_progress=False)
            stats = motion_stats(encoders.decode(latents))
            rows[key].append((stats, "y" if key in ("up", "down") else "x"))
    figures = {"stage": "samples", "clips_per_prompt": {k: len(v) for k, v in rows.items()}, "steps": steps, "guidance": guidance}
    generic = rows["generic"]
    moving = [s for s, axis in generic if _stats_row(s, "x")[0]]
    figures["generic_moving_share_dx"] = round(len(moving) / len(generic), 3)
    figures["generic_tracked_share"] = round(sum(s.tracked == 1.0 for s, _ in generic) / len(generic), 3)
    figures["generic_right_share_of_moving"] = round(sum(s.dx > 0 for s in moving) / max(1, len(moving)), 3)
    figures["generic_mean_abs_dx"] = round(float(np.nanmean([abs(s.dx) for s, _ in generic])), 3)
    for key in ("right", "left", "up", "down"):
        ux, uy = DIRECTIONS[key]
        sign = ux or uy
        ok = [_stats_row(s, axis)[0] and sign * _stats_row(s, axis)[1] > 0 for s, axis in rows[key]]
        figures[f"{key}_prompt_moves_{key}_share"] = round(sum(ok) / max(1, len(ok)), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "models" / "demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=300)  # the shipped model's recipe (models/demo/README.md)
    parser.add_argument("--unet-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-clips", type=int, default=24)
    parser.add_argument("--eval-steps", type=int, default=15)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--check-every", type=int, default=0, help="sample 8 held-out clips every N UNet steps and log how many move (0: never)")
    parser.add_argument("--work", type=Path, default=None, help="keep the trained VAE and UNet checkpoints here; a rerun reuses the VAE and resumes the UNet")
    parser.add_argument("--eval-only", action="store_true", help="only sample and measure the model in --out")
    parser.add_argument("--card-only", action="store_true", help="only write the model card from --out's figures.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    figures: list[dict] = []

    def report(row: dict) -> None:
        print(json.dumps(row), flush=True)
        figures.append(row)

    if args.card_only:
        write_card(args.out, json.loads((args.out / "figures.json").read_text()), args.seed, ARCHITECTURE)
        return
    begin = time.perf_counter()
    if not args.eval_only:
        data = [shape_clip(seed, frames=FRAMES, size=SIZE) for seed in range(TRAIN_CLIPS)]
        clips = np.stack([c.frames for c in data])  # (n, f, h, w, 3)
        held_out = np.stack([shape_clip(HELD_OUT + i, frames=FRAMES, size=SIZE).frames for i in range(64)])
        vae_file = args.work / "vae" if args.work else None
        if vae_file is not None and (vae_file / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(vae_file).eval()
            report(json.loads((args.work / "vae.json").read_text()))
        else:
            vae, row = train_vae(clips, held_out, args.vae_steps, args.seed)
            report(row)
            if vae_file is not None:
                vae.save_pretrained(vae_file)
                (args.work / "vae.json").write_text(json.dumps(row))
        parts, row = train_unet(vae, clips, [c.prompt for c in data], args.unet_steps, args.batch, args.seed, args.check_every, args.work)
        report(row)
        report(save(args.out, vae, parts))
    report(evaluate(args.out, args.eval_clips, args.eval_steps, args.guidance, args.seed))
    if args.eval_only:  # the new samples row replaces the old one; the training rows stay
        kept = json.loads((args.out / "figures.json").read_text())
        figures = [row if row["stage"] != "samples" else figures[-1] for row in kept]
    else:
        report({"stage": "total", "seconds": round(time.perf_counter() - begin), "threads": torch.get_num_threads(), "seed": args.seed})
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    write_card(args.out, figures, args.seed, ARCHITECTURE)


if __name__ == "__main__":
    main()
