"""Two-stage training of a category: a `motion` LoRA on its clips, then a `dpo` LoRA on its pairs.

`train()` is what the CLI, the app and the tests call. It writes everything to a run folder
(huvi.runs), checkpoints atomically, stops cleanly when asked, and resumes bit-for-bit: every
random draw of a step is seeded from (run seed, stage, step, micro-batch, process rank).
Multi-GPU comes from accelerate (`accelerate launch -m huvi train ...`): each process takes its own
clips or pairs of the step and gradients are averaged.

The DPO stage has two modes (`dpo.mode`): `clip` learns from pairs of differently rated clips (and
explicit pairs with a winner), one Diffusion-DPO term per pair; `dense` learns from the category's
explicit pairs labelled per segment, one term per labelled segment (DenseDPO). The motion stage
learns from the rated clips in both (the losses of a micro-batch: huvi.stage_losses).

The DPO stage watches its own health (huvi.health: winners and losers both degrading, accuracy
falling from its peak, loss spikes, held-out accuracy falling), names the signs in its metrics rows
and logs each when it starts; with held-out pairs (data.holdout > 0) its final adapter is the one of
the best held-out check (huvi.best).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from peft import set_peft_model_state_dict
from tqdm.auto import tqdm

from huvi.adapters import DPO, MOTION, adapter_parameters, adapter_state_dict, add_adapter, load_adapter, save_adapter, set_active
from huvi.batches import derived_seed
from huvi.best import BestAdapter
from huvi.cache import CategoryLatents, cache_category
from huvi.category import Category, check_pair_lengths, load_category
from huvi.config import HuviConfig
from huvi.errors import HuviError
from huvi.evaluate import score_pairs
from huvi.families import family_for, smaller_preset
from huvi.health import HealthMonitor
from huvi.optim import make_lr_schedule, make_optimizer
from huvi.pairs import Pair, SegmentPair, form_pairs, segment_pairs, split_pairs
from huvi.precision import make_accelerator, precision_name, weight_dtype
from huvi.previews import Previewer
from huvi.runs import (
    STAGES,
    CheckpointRef,
    Run,
    optimizer_from_tensors,
    optimizer_to_tensors,
)
from huvi.stage_losses import StageLosses

logger = logging.getLogger(__name__)

def out_of_memory_advice(preset: str) -> str:
    """What to do after a CUDA out-of-memory error on `preset`: the next smaller preset, when there is one."""
    if smaller := smaller_preset(preset):
        return f"start a new run with the smaller preset {smaller} (--preset {smaller})"
    return "start a new run with fewer data.frames or a smaller data.width and data.height"


def _unless_out_of_memory(what: str, advice: str, extra: Callable[[], Any]) -> Any:
    """Run an optional extra of a training step (held-out scoring, a preview clip); when the GPU
    runs out of memory in it, skip it with a warning and let training go on: returns None then."""
    try:
        return extra()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        logger.warning("The GPU ran out of memory while %s; it is skipped this time and training goes on (to avoid it, %s).", what, advice)
        return None


@dataclass
class TrainResult:
    run: Path
    stopped: bool  # True when a stop request ended training early (a checkpoint was written)
    last: dict[str, dict] = field(default_factory=dict)  # stage -> its last metrics row


def train(
    cfg: HuviConfig,
    category_dir: Path,
    run_dir: Path,
    stages: Iterable[str] = STAGES,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train `stages` of the category at `category_dir` into `run_dir`.

    A new run refuses an existing run folder; `resume=True` continues it from its latest
    checkpoint with the config it was started with (`cfg` is then ignored). `should_stop` is polled
    after every step: when it returns True a checkpoint is written and training returns.
    """
    run = Run(run_dir)
    stages = [s for s in STAGES if s in set(stages)]
    if resume:
        if not run.exists():
            raise HuviError(f"{run.root} holds no config.yaml, so there is nothing to resume; give the folder of a started run, or start again without --resume.")
        cfg = run.read_config()
    category = load_category(category_dir)
    accelerator = make_accelerator(cfg.precision)
    if not resume and run.holds_files():  # config.yaml included
        raise HuviError(f"{run.root} already holds files; pass --resume to continue that run, or choose a new --out folder.")
    trainer = _Trainer(cfg, category, run, accelerator, show_progress)
    try:
        trainer.setup(stages)  # decodes and caches every clip: bad input fails here, before anything is written
    except torch.OutOfMemoryError:
        raise HuviError(f"The GPU ran out of memory while loading the model and encoding the clips; {out_of_memory_advice(cfg.preset)}.") from None
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one writes to it
    if not resume and accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
        run.write_info(
            {
                "category": str(category.root.resolve()),
                "prompt": category.prompt,
                "clips": len(category.clips),
                "pairs": len(trainer.pairs_train),
                "held_out_pairs": len(trainer.pairs_val),
            }
        )
    accelerator.wait_for_everyone()
    return trainer.fit(stages, should_stop or (lambda: False), resume)


class _Trainer:
    def __init__(self, cfg: HuviConfig, category: Category, run: Run, accelerator: Accelerator, show_progress: bool) -> None:
        self.cfg, self.category, self.run, self.show_progress = cfg, category, run, show_progress
        self.accelerator = accelerator
        self.device = self.accelerator.device
        self.weight_dtype = weight_dtype(self.accelerator.mixed_precision)
        self.pairs_train: list[Pair] | list[SegmentPair] = []
        self.pairs_val: list[Pair] | list[SegmentPair] = []
        self.latents: CategoryLatents | None = None
        self.unet = None
        self.family = family_for(cfg.model)
        self.previewer: Previewer | None = None
        self.best: BestAdapter | None = None  # the DPO stage's best held-out adapter (with data.holdout > 0)

    # setup -----------------------------------------------------------------------------------
    def setup(self, stages: list[str]) -> None:
        cfg = self.cfg
        with self.accelerator.main_process_first():
            self.latents = cache_category(self.category, cfg, self.family.load_encoders, self.device, self.show_progress)
        check_pair_lengths(self.category, {name: clip.latents.shape[1] for name, clip in self.latents.clips.items()}, cfg.data, self.family.frames_per_latent)
        if "dpo" in stages:
            self._form_pairs()
        rated = CategoryLatents(self.latents.prompt_embeds, {name: self.latents.clips[name] for name in self.category.scores})
        if cfg.generate.preview_every and self.accelerator.is_main_process:
            self.previewer = Previewer(cfg, rated, self.category.scores, self.family, self.device)
        self.unet = self.family.load_denoiser(self.weight_dtype)  # frozen base in the weight dtype; adapters are added in fp32
        if cfg.model.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.unet.requires_grad_(False)
        self.unet.to(self.device)
        names = list(self.category.scores)
        self.losses = StageLosses(cfg, self.latents, names, self.pairs_train, self.unet, self.family, self.device, self.weight_dtype, self.accelerator.autocast)

    def _form_pairs(self) -> None:
        cfg, explicit = self.cfg, self.category.pairs
        if cfg.dpo.mode == "clip":
            gap = cfg.data.min_rating_gap
            pairs = form_pairs(self.category.scores, cfg.seed, explicit, gap)
            unused = sum(p.clip_pair() is None for p in explicit)
            skipped = "have no \"winner\" other than a tie (segment labels are used in dense mode)"
            apart = "different ratings" if gap == 1 else f"ratings {gap} or more apart (data.min_rating_gap)"
            what, advice = "preference pairs", f"give at least two clips {apart}, or an explicit pair a \"winner\""
        else:
            pairs = segment_pairs(explicit, cfg.data.frames, cfg.seed, self.family.frames_per_latent)
            unused = len(explicit) - len(pairs)
            segments = sum(sign != 0 for p in pairs for sign in p.signs)
            skipped = "are unlabelled or tied throughout"
            what, advice = f"segment-labelled pairs ({segments} labelled segments)", "label the segments of an explicit pair in category.json"
        if unused:
            logger.info("%d explicit pairs %s, so %s mode skips them", unused, skipped, cfg.dpo.mode)
        if not pairs:
            raise HuviError(f"No preference pairs to train on in {cfg.dpo.mode} mode; {advice}.")
        self.pairs_train, self.pairs_val = split_pairs(pairs, cfg.data.holdout)
        logger.info("%d %s: %d for training, %d held out", len(pairs), what, len(self.pairs_train), len(self.pairs_val))

    def fit(self, stages: list[str], should_stop: Callable[[], bool], resume: bool) -> TrainResult:
        resume_from = self.run.latest_checkpoint() if resume else None
        file_log = self._attach_log_file()
        try:
            result = TrainResult(run=self.run.root, stopped=False)
            if resume and self.accelerator.is_main_process:
                self.run.remove_temporaries()  # what a crash in the middle of a write left behind
                self.run.truncate_metrics(*((resume_from.stage, resume_from.step) if resume_from else (STAGES[0], 0)))
                logger.info("resuming from %s", resume_from.path.name if resume_from else "the start (no checkpoint yet)")
            for stage in stages:
                if self.run.adapter_path(stage).is_file() and (resume_from is None or resume_from.order >= (STAGES.index(stage), self.cfg.stage(stage).steps)):
                    logger.info("stage %s is already complete in %s", stage, self.run.root)
                    result.last[stage] = self.run.last_metrics(stage)
                    continue
                start = resume_from if resume_from is not None and resume_from.stage == stage else None
                row, stopped = self._run_stage(stage, start, should_stop)
                result.last[stage] = row or self.run.last_metrics(stage)  # no row: resumed at the stage's last step
                if stopped:
                    result.stopped = True
                    break
            return result
        finally:
            logging.getLogger("huvi").removeHandler(file_log)
            file_log.close()

    def _attach_log_file(self) -> logging.Handler:
        if not self.accelerator.is_main_process:
            return logging.NullHandler()
        handler = logging.FileHandler(self.run.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        logging.getLogger("huvi").addHandler(handler)
        return handler

    # stages ----------------------------------------------------------------------------------
    def _prepare_adapters(self, stage: str) -> None:
        unet, scfg = self.unet, self.cfg.stage(stage)
        if stage == DPO and MOTION not in getattr(unet, "peft_config", {}):
            load_adapter(unet, self.run.adapter_path(MOTION), MOTION)  # draws random numbers too: before the seed below
        torch.manual_seed(derived_seed(self.cfg.seed, stage, "init"))  # the LoRA A matrices are drawn now
        add_adapter(unet, stage, scfg.adapter)
        set_active(unet, [MOTION] if stage == MOTION else [MOTION, DPO], trainable=stage)
        unet.to(self.device)

    def _run_stage(self, stage: str, start: CheckpointRef | None, should_stop: Callable[[], bool]) -> tuple[dict, bool]:
        acc, scfg = self.accelerator, self.cfg.stage(stage)
        self._prepare_adapters(stage)
        params = adapter_parameters(self.unet, stage)
        optimizer = make_optimizer(params, scfg, self.cfg.optim)
        schedule = make_lr_schedule(optimizer, scfg)
        restored = Run.load_checkpoint(start) if start is not None else None
        step = self._restore(restored, stage, optimizer, schedule) if restored is not None else 0
        self.best = BestAdapter(self.run.best_folder, stage, restored[1].get("best") if restored else None) if stage == DPO and self.pairs_val else None
        monitor = HealthMonitor(degrade=self.cfg.dpo.degrade_warning) if stage == DPO else None
        if monitor is not None:
            monitor.replay([r for r in self.run.read_metrics() if r["stage"] == stage and r["step"] <= step])
        model, optimizer = acc.prepare(self.unet, optimizer)
        model.train()
        logger.info(
            "stage %s: %d steps from step %d, %.2fM trainable parameters, %s precision",
            stage, scfg.steps, step, sum(p.numel() for p in params) / 1e6, precision_name(acc.mixed_precision),
        )
        bar = tqdm(total=scfg.steps, initial=step, desc=stage, unit="step", disable=not (self.show_progress and acc.is_main_process))
        row: dict = {}
        stopped = False
        try:
            while step < scfg.steps:
                t0 = time.perf_counter()
                try:
                    row = self._step(stage, model, optimizer, schedule, params, step)
                except torch.OutOfMemoryError:
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    self._checkpoint(stage, step, optimizer, schedule)
                    raise HuviError(
                        f"The GPU ran out of memory in the {stage} stage at step {step + 1}; {out_of_memory_advice(self.cfg.preset)}, "
                        f"or resume this run on a card with more free memory (Resume or --resume continues from step {step})."
                    ) from None
                step += 1
                row |= {"stage": stage, "step": step, "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 4)}
                if self.best is not None and (step % self.cfg.dpo.eval_every == 0 or step == scfg.steps):
                    row |= _unless_out_of_memory("scoring the held-out pairs", "lower dpo.eval_samples", self._validate) or {}
                    if acc.is_main_process and self.best.offer(step, row, adapter_state_dict(acc.unwrap_model(model), stage)):
                        logger.info("best held-out accuracy so far at step %d: %.3f", step, row["val_accuracy"])
                if self.best is not None and self.best.best is not None:
                    row["best_step"] = self.best.best.step
                if monitor is not None:
                    signs, sentences = monitor.update(row)
                    if signs:
                        row["health"] = signs
                    for sentence in sentences if acc.is_main_process else ():
                        logger.warning("%s", sentence)
                if acc.is_main_process:
                    self.run.append_metrics(row)
                    bar.update(1)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "accuracy") if k in row})
                    if step % self.cfg.log_every == 0 or step == 1:
                        logger.info("%s", " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                if self.previewer is not None and step % self.cfg.generate.preview_every == 0:
                    write = functools.partial(self.previewer.write, acc.unwrap_model(model), self.run.preview_path(stage, step))
                    _unless_out_of_memory("writing a preview clip", "set generate.preview_every to 0", write)
                if acc.is_main_process and should_stop():
                    acc.set_trigger()
                if acc.check_trigger():
                    stopped = True
                if stopped or step % scfg.checkpoint_every == 0 or step == scfg.steps:
                    self._checkpoint(stage, step, optimizer, schedule)
                if stopped:
                    logger.info("stopped at %s step %d; continue with --resume", stage, step)
                    break
        finally:
            bar.close()
            self.unet = acc.unwrap_model(model)
            acc.free_memory()
        if not stopped and acc.is_main_process:
            self._save_final(stage, step)
        acc.wait_for_everyone()
        return row, stopped

    def _save_final(self, stage: str, step: int) -> None:
        """The stage's adapter file: the last step's, or with held-out pairs the best-scoring one
        (the last step's then goes beside it as `.last`)."""
        scfg = self.cfg.stage(stage)
        best = self.best.best if self.best is not None else None
        if best is None or best.step == step:
            save_adapter(self.run.adapter_path(stage), self.unet, stage, scfg.adapter, {"huvi.steps": str(step)})
        else:
            save_adapter(self.run.last_adapter_path(stage), self.unet, stage, scfg.adapter, {"huvi.steps": str(step)})
            set_peft_model_state_dict(self.unet, self.best.tensors(), adapter_name=stage)
            save_adapter(self.run.adapter_path(stage), self.unet, stage, scfg.adapter, {"huvi.steps": str(best.step), "huvi.best_of": str(step)})
            logger.info(
                "the final %s adapter is step %d's, the best held-out accuracy (%.3f); step %d's is kept as %s",
                stage, best.step, best.val_accuracy, step, self.run.last_adapter_path(stage).relative_to(self.run.root),
            )
        if self.best is not None:
            self.best.remove()

    # one optimizer step --------------------------------------------------------------------------
    def _step(self, stage, model, optimizer, schedule, params, step: int) -> dict:
        acc, scfg, cfg = self.accelerator, self.cfg.stage(stage), self.cfg
        sums: dict[str, float] = {}
        for micro in range(scfg.grad_accum):
            # Every draw of this micro-batch (dropout too) depends on these numbers only.
            torch.manual_seed(derived_seed(cfg.seed, stage, step, micro, acc.process_index))
            gen = torch.Generator().manual_seed(derived_seed(cfg.seed, stage, step, micro, acc.process_index, "data"))
            position = ((step * scfg.grad_accum + micro) * acc.num_processes + acc.process_index) * scfg.batch_size
            sync = acc.no_sync(model) if micro < scfg.grad_accum - 1 else nullcontext()
            with sync:
                loss, stats = self.losses.for_stage(stage)(model, gen, position)
                acc.backward(loss / scfg.grad_accum)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value / scfg.grad_accum
        grad_norm = acc.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        stats = {k: acc.reduce(torch.tensor(v, device=self.device), "mean").item() for k, v in sums.items()}
        stats["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        return {k: round(v, 6) if math.isfinite(v) else v for k, v in stats.items()}

    def _validate(self) -> dict:
        scores = score_pairs(
            self.unet, self.family, self.latents.clips, self.pairs_val,
            self.latents.prompt_embeds.to(self.weight_dtype), self.cfg.data.frames, self.cfg.dpo.beta,
            self.cfg.dpo.eval_samples, self.cfg.seed, self.device, self.accelerator.autocast, min_noise=self.cfg.dpo.min_noise,
        )
        return {"val_accuracy": scores.accuracy, "val_reward_margin": round(scores.reward_margin, 6)}

    # checkpoints -----------------------------------------------------------------------------
    def _checkpoint(self, stage: str, step: int, optimizer, schedule) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            opt_tensors, opt_rest = optimizer_to_tensors(optimizer.state_dict())
            rng = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
            state = {
                "stage": stage,
                "step": step,
                "seed": self.cfg.seed,
                "lr_schedule": schedule.state_dict(),
                "optimizer": opt_rest,
                "pairs": _pair_keys(self.pairs_train) if stage == DPO else [],
                "best": self.best.state() if self.best is not None else None,
            }
            unet = acc.unwrap_model(self.unet)
            tensors = {"adapter": adapter_state_dict(unet, stage), "optimizer": opt_tensors, "rng": rng}
            path = self.run.save_checkpoint(stage, step, tensors, state, self.cfg.keep_checkpoints)
            logger.info("checkpoint %s", path.name)
        acc.wait_for_everyone()

    def _restore(self, checkpoint: tuple[dict, dict], stage: str, optimizer, schedule) -> int:
        tensors, state = checkpoint
        if state["stage"] == DPO and _pair_keys(self.pairs_train) != state["pairs"]:
            raise HuviError(f"The clips, ratings or pair labels of {self.category.root} changed since this run started, so it cannot resume; start a new run.")
        set_peft_model_state_dict(self.unet, tensors["adapter"], adapter_name=stage)
        optimizer.load_state_dict(optimizer_from_tensors(tensors["optimizer"], state["optimizer"]))
        schedule.load_state_dict(state["lr_schedule"])
        torch.set_rng_state(tensors["rng"]["cpu"])
        return int(state["step"])


def _pair_keys(pairs: list[Pair] | list[SegmentPair]) -> list:
    """The training pairs as JSON lists (a checkpoint stores them to refuse a resume on changed data):
    [winner, loser] per clip pair, [a, b, [signs]] per segment pair."""
    return json.loads(json.dumps([dataclasses.astuple(p) for p in pairs]))
