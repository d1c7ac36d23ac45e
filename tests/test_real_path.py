"""The GPU presets' own code paths, run on the CPU at the tiny preset's size.

Tiny differs from the real presets in sizes only; what it keeps different for learning's sake
(gradient checkpointing off, its own adapter targets and rates) runs here with the real settings:
each GPU preset with only its model, clip size and step counts shrunk (helpers.at_tiny_size), in
bf16 as a GPU runs it, with gradient checkpointing, sparse-causal attention and 8-bit AdamW,
through training, a SIGKILL and a resume, evaluation, generation and DenseDPO's aligned pairs.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GPU_PRESETS, at_tiny_size, metric_rows, wait_for, without_timing
from PIL import Image
from safetensors.torch import load_file

from huvi.config import HuviConfig, load_config
from huvi.dense import make_aligned_pairs
from huvi.evaluate import evaluate_run
from huvi.generate import GenerateRequest, RunModel
from huvi.runs import Run
from huvi.trainer import train

REPO = Path(__file__).resolve().parent.parent
PRESET = "sd15-24gb"


@dataclass
class RealRun:
    root: Path
    cfg: HuviConfig
    category: Path
    checkpointed_calls: int  # activation-checkpoint calls seen while it trained


@pytest.fixture(scope="module")
def real_run(category, tmp_path_factory) -> RealRun:
    """sd15-24gb at the tiny size, trained in this process: 2 motion and 3 DPO steps."""
    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    cfg = load_config(PRESET, at_tiny_size())
    root = tmp_path_factory.mktemp("real") / "run"
    huvi_log, level = logging.getLogger("huvi"), logging.getLogger("huvi").level
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
        huvi_log.setLevel(logging.INFO)  # train.log gets the INFO lines, as under the CLI (setLevel clears logging's cache)
        try:
            train(cfg, category, root, show_progress=False)
        finally:
            huvi_log.setLevel(level)
    return RealRun(root, cfg, category, len(calls))


@pytest.mark.parametrize("preset", GPU_PRESETS)
def test_at_tiny_size_a_gpu_preset_keeps_its_own_settings(preset):
    real, small = load_config(preset), load_config(preset, at_tiny_size())
    assert small.model.source == "tiny" and small.precision == "bf16"
    assert small.optim == real.optim and small.optim.optimizer == "adamw8bit"
    assert small.model.gradient_checkpointing and small.model.attention == "sparse_causal"
    assert small.motion.adapter == real.motion.adapter and small.dpo.adapter == real.dpo.adapter
    assert (small.dpo.beta, small.dpo.learning_rate, small.motion.learning_rate) == (real.dpo.beta, real.dpo.learning_rate, real.motion.learning_rate)
    assert small.data.min_rating_gap == real.data.min_rating_gap == 1  # how pairs form is the preset's, not tiny's 2


def test_a_gpu_preset_trains_in_bf16_with_checkpointing_and_8bit_adamw(real_run):
    rows = metric_rows(real_run.root)
    assert [(r["stage"], r["step"]) for r in rows] == [("motion", 1), ("motion", 2), ("dpo", 1), ("dpo", 2), ("dpo", 3)]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    first_dpo = rows[2]
    assert first_dpo["loss"] == pytest.approx(math.log(2), abs=1e-6) and first_dpo["accuracy"] == 0.5
    log = (real_run.root / "train.log").read_text()
    assert "stage motion" in log and "bf16 precision" in log
    assert real_run.checkpointed_calls > 0  # the UNet's blocks and its motion modules recomputed in backward
    tensors, _ = Run.load_checkpoint(Run(real_run.root).latest_checkpoint())
    assert any("__bnb_optimizer_quant_state__" in key for key in tensors["optimizer"])  # bitsandbytes' AdamW8bit stepped


def test_sigkill_and_resume_of_a_gpu_preset_is_bit_exact(real_run, tmp_path):
    """The CLI trains sd15-24gb at the tiny size; SIGKILL once a DPO checkpoint (8-bit state and
    all) is on disk; `--resume` ends with the metrics and adapters of the uninterrupted run."""
    run = tmp_path / "run"
    args = ["--category", str(real_run.category), "--out", str(run)]
    sets = [item for pair in (("--set", s) for s in at_tiny_size()) for item in pair]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    train_cmd = [sys.executable, "-m", "huvi", "train", *args]
    proc = subprocess.Popen([*train_cmd, "--preset", PRESET, *sets], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (run / "checkpoints" / "dpo-000001" / "state.json").is_file() or proc.poll() is not None, what="checkpoint dpo-000001")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not Run(run).adapter_path("dpo").exists()
    resumed = subprocess.run([*train_cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert without_timing(metric_rows(run)) == without_timing(metric_rows(real_run.root))
    for stage in ("motion", "dpo"):
        got, want = load_file(str(Run(run).adapter_path(stage))), load_file(str(Run(real_run.root).adapter_path(stage)))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), stage


def test_evaluate_generate_and_dense_pairs_in_the_runs_bf16(real_run, category_copy, tmp_path):
    scores = evaluate_run(real_run.root, real_run.category, samples=2, show_progress=False)
    assert scores.pairs > 0 and 0.0 <= scores.accuracy <= 1.0 and math.isfinite(scores.reward_margin)

    model = RunModel(real_run.root)  # generate honours the run's precision, not the machine's default (fp32 here)
    assert model.dtype == torch.bfloat16 and model.encoders.vae.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.unet.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "first.png")
    with_image = model.generate(GenerateRequest("a square", first_frame=tmp_path / "first.png", seed=1, compare=True), tmp_path / "a.mp4", show_progress=False)
    drawn = model.generate(GenerateRequest("a square", seed=2), tmp_path / "b.mp4", show_progress=False)  # first frame from the tiny DPO-SDXL in bf16
    for result in (with_image, drawn):
        assert result.video.is_file() and result.first_frame.is_file()
    assert with_image.compare.is_file()

    pairs = make_aligned_pairs(real_run.root, category_copy, clips=[min(os.listdir(category_copy / "clips"))], seed=5, show_progress=False)
    assert len(pairs) == 1 and all((category_copy / "clips" / name).is_file() for name in (pairs[0].a, pairs[0].b))


def test_fp16_trains_and_generates_on_the_cpu(category, tmp_path):
    """fp16 as a GPU without bf16 runs it (the CPU has the fp16 kernels; accelerate has no loss
    scaler on a CPU, so that part of the fp16 path is a GPU's alone)."""
    cfg = load_config(PRESET, [*at_tiny_size(motion_steps=1), "precision=fp16"])
    root = tmp_path / "run"
    train(cfg, category, root, stages=["motion"], show_progress=False)
    rows = metric_rows(root)
    assert len(rows) == 1 and math.isfinite(rows[0]["loss"])
    model = RunModel(root)
    assert model.dtype == torch.float16
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "first.png")
    result = model.generate(GenerateRequest("a square", first_frame=tmp_path / "first.png"), tmp_path / "out.mp4", show_progress=False)
    assert result.video.is_file()
