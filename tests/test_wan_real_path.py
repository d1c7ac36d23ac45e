"""The wan GPU presets' own code paths, run on the CPU at the wan-tiny preset's size.

wan-tiny keeps gradient checkpointing off for speed; here wan21-1.3b and wan22-5b run with only their
model, clip size and step counts shrunk (helpers.at_tiny_size): the tiny random components in the
published model's modes (Wan 2.2 TI2V's per-token timesteps and flow shift 5), in bf16 as a GPU runs
them, with gradient checkpointing and 8-bit AdamW, through a stop at a DPO checkpoint and a bit-exact
resume, evaluation and generation. The full-size models take this path in tests/test_full_size.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import WAN_GPU_PRESETS, at_tiny_size, metric_rows, without_timing
from PIL import Image
from safetensors.torch import load_file

from huvi.config import HuviConfig, load_config
from huvi.evaluate import evaluate_run
from huvi.families import family_for
from huvi.generate import GenerateRequest, RunModel
from huvi.runs import Run
from huvi.trainer import train


def at_wan_tiny_size(preset: str) -> HuviConfig:
    return load_config(preset, at_tiny_size(motion_steps=2, dpo_steps=2, tiny_preset="wan-tiny"))


@dataclass
class WanRun:
    root: Path
    cfg: HuviConfig
    checkpointed_calls: int  # activation-checkpoint calls seen while it trained


@pytest.fixture(scope="module", params=WAN_GPU_PRESETS)
def wan_run(request, category, tmp_path_factory) -> WanRun:
    """A wan GPU preset at the wan-tiny size, trained in this process: 2 motion and 2 DPO steps."""
    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    cfg = at_wan_tiny_size(request.param)
    root = tmp_path_factory.mktemp(request.param) / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
        train(cfg, category, root, show_progress=False)
    return WanRun(root, cfg, len(calls))


@pytest.mark.parametrize("preset", WAN_GPU_PRESETS)
def test_at_wan_tiny_size_a_gpu_preset_keeps_its_own_settings_and_modes(preset):
    real, small = load_config(preset), load_config(preset, at_tiny_size(tiny_preset="wan-tiny"))
    assert small.model.source == "tiny" and small.precision == "bf16" and small.model.gradient_checkpointing
    assert small.optim == real.optim and small.optim.optimizer == "adamw8bit"
    assert small.motion.adapter == real.motion.adapter and small.dpo.adapter == real.dpo.adapter
    assert (small.dpo.beta, small.dpo.learning_rate, small.motion.learning_rate) == (real.dpo.beta, real.dpo.learning_rate, real.motion.learning_rate)
    family = family_for(small.model)
    ti2v = preset == "wan22-5b"
    assert family.expand_timesteps == ti2v and family.shift == (5.0 if ti2v else 3.0)


def test_a_wan_gpu_preset_trains_in_bf16_with_checkpointing_and_8bit_adamw(wan_run):
    rows = metric_rows(wan_run.root)
    assert [(r["stage"], r["step"]) for r in rows] == [("motion", 1), ("motion", 2), ("dpo", 1), ("dpo", 2)]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    assert rows[2]["loss"] == pytest.approx(math.log(2), abs=1e-6) and rows[2]["accuracy"] == 0.5
    assert wan_run.checkpointed_calls > 0  # the transformer's blocks recomputed in backward
    tensors, _ = Run.load_checkpoint(Run(wan_run.root).latest_checkpoint())
    assert any("__bnb_optimizer_quant_state__" in key for key in tensors["optimizer"])  # bitsandbytes' AdamW8bit stepped


def test_a_stop_at_a_dpo_checkpoint_and_resume_is_bit_exact(wan_run, category, tmp_path):
    run_dir = tmp_path / "run"

    def after_dpo_step_1() -> bool:
        rows = metric_rows(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        return bool(rows) and (rows[-1]["stage"], rows[-1]["step"]) == ("dpo", 1)

    assert train(wan_run.cfg, category, run_dir, should_stop=after_dpo_step_1, show_progress=False).stopped
    train(wan_run.cfg, category, run_dir, resume=True, show_progress=False)
    assert without_timing(metric_rows(run_dir)) == without_timing(metric_rows(wan_run.root))
    for stage in ("motion", "dpo"):
        got, want = load_file(str(Run(run_dir).adapter_path(stage))), load_file(str(Run(wan_run.root).adapter_path(stage)))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), stage


def test_evaluate_and_generate_in_the_runs_bf16(wan_run, category, tmp_path):
    scores = evaluate_run(wan_run.root, category, samples=1, show_progress=False)
    assert scores.pairs > 0 and 0.0 <= scores.accuracy <= 1.0 and math.isfinite(scores.reward_margin)
    model = RunModel(wan_run.root)  # generate honours the run's precision, not the machine's default (fp32 here)
    assert model.dtype == torch.bfloat16 and model.encoders.vae.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.unet.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "first.png")
    result = model.generate(GenerateRequest("a square", first_frame=tmp_path / "first.png", seed=1, compare=True), tmp_path / "a.mp4", show_progress=False)
    assert result.video.is_file() and result.first_frame.is_file() and result.compare.is_file()
