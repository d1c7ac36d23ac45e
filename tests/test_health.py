"""huvi.health: the signs of a DPO stage going wrong, on rows made by hand; huvi.best through a run."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from helpers import metric_rows, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

from huvi.config import load_config
from huvi.errors import HuviError
from huvi.health import ACCURACY_FELL, DEGRADING, HELD_OUT_FELL, LOSS_CLIMBING, HealthMonitor, summary
from huvi.runs import Run
from huvi.trainer import train


def row(step: int, loss: float = 0.3, accuracy: float = 0.9, winner: float = 1.0, loser: float = 1.05, **extra) -> dict:
    """A DPO metrics row; winner and loser are the model's losses relative to the reference's (1.0 each)."""
    return {"stage": "dpo", "step": step, "loss": loss, "accuracy": accuracy, "loss_w": winner, "loss_l": loser, "ref_loss_w": 1.0, "ref_loss_l": 1.0} | extra


def run_monitor(rows: list[dict]) -> tuple[list[list[str]], list[str]]:
    monitor, signs, sentences = HealthMonitor(), [], []
    for r in rows:
        active, new = monitor.update(r)
        signs.append(active)
        sentences += new
    return signs, sentences


def test_a_healthy_stage_raises_nothing():
    signs, sentences = run_monitor([row(i, loss=0.69 - 0.003 * i, accuracy=0.5 + 0.004 * i) for i in range(1, 101)])
    assert not any(signs) and sentences == []


def test_winners_and_losers_both_worse_than_the_reference_is_degrading():
    rows = [row(i) for i in range(1, 21)] + [row(i, winner=1.08, loser=1.25) for i in range(21, 61)]
    signs, sentences = run_monitor(rows)
    first = next(i for i, s in enumerate(signs) if DEGRADING in s)
    assert 21 <= first + 1 <= 40 and all(DEGRADING in s for s in signs[first:])
    assert len(sentences) == 1 and sentences[0].startswith(f"DPO is degrading the model at step {first + 1}: the winners' and the losers' own")
    assert "lower dpo.learning_rate" in sentences[0]


def test_how_far_the_losses_may_drift_is_the_presets():
    """A trained base drifts further in healthy stages than tiny's random one: the demo preset's
    rated runs that moved generation the right way rose to +27%, its controls that lost the shape
    to +74% and more (presets/demo.yaml), so it warns at its own dpo.degrade_warning."""
    healthy, sick = ([row(i, winner=1 + rise, loser=1 + 2 * rise) for i in range(1, 41)] for rise in (0.25, 0.8))
    assert any(DEGRADING in s for s in run_monitor(healthy)[0])  # tiny's 0.05
    for rows, warned in ((healthy, False), (sick, True)):
        monitor = HealthMonitor(degrade=load_config("demo").dpo.degrade_warning)
        assert any(DEGRADING in monitor.update(r)[0] for r in rows) is warned
    with pytest.raises(HuviError, match="dpo.degrade_warning must be positive"):
        load_config("demo", ["dpo.degrade_warning=0"])


def test_training_accuracy_falling_from_its_peak_is_overshooting():
    rows = [row(i, accuracy=1.0, loss=0.01) for i in range(1, 51)] + [row(i, accuracy=0.0, loss=0.01) for i in range(51, 81)]
    signs, sentences = run_monitor(rows)
    assert ACCURACY_FELL not in signs[49] and ACCURACY_FELL in signs[-1]
    assert len(sentences) == 1 and sentences[0].startswith("DPO is overshooting at step") and "fell from 1.00 to" in sentences[0]


def test_one_pair_a_step_accuracy_noise_is_not_overshooting():
    """Training accuracy is one pair's 0 or 1 a step: a healthy stage right on 80% of its pairs
    wanders by +-0.1 over 20 steps, which a 20-step peak-to-dip reading took for a collapse."""
    draws = np.random.default_rng(0).random(200) < 0.8
    rows = [row(i, accuracy=float(hit), loss=0.2) for i, hit in enumerate(draws, start=1)]
    assert ACCURACY_FELL not in {s for signs in run_monitor(rows)[0] for s in signs}
    short = HealthMonitor(pair_window=20)  # the reading this replaced
    assert any(ACCURACY_FELL in short.update(r)[0] for r in rows)


def test_most_pairs_worse_than_the_reference_is_loss_climbing_and_a_wrong_pair_here_and_there_is_not():
    """With one pair a step and beta 5000 a wrong pair costs 5-40 and a right one ~0, so a healthy
    stage's 20-step mean loss jumps above ln 2 whenever one or two of its pairs come out wrong (the
    reading this replaced warned in 37 of 126 sweep stages, none collapsing). The sign is the
    running median back above ln 2 once the stage had learned its pairs: most of them now wrong."""
    learned = [row(i, loss=0.001) for i in range(1, 61)]
    spikes = [row(i, loss=20.0 if i % 10 == 0 else 0.001) for i in range(61, 201)]  # 2 wrong pairs in 20
    assert statistics.fmean(r["loss"] for r in spikes[-20:]) > math.log(2)  # the mean reading warned here
    assert run_monitor(learned + spikes) == ([[]] * 200, [])
    collapse = [row(i, loss=3.0 if i % 4 else 0.01) for i in range(61, 141)]  # 3 pairs in 4 wrong
    signs, sentences = run_monitor(learned + collapse)
    first = next(i for i, s in enumerate(signs) if LOSS_CLIMBING in s) + 1
    assert first == 94 and all(LOSS_CLIMBING in s for s in signs[first - 1 :])  # 26 of the last 50 wrong: 8 of 34 right
    assert len(sentences) == 1 and sentences[0].startswith("The DPO loss climbed back to 3 by step 94 from 0.001 (median of 50 steps)")
    assert "on 26 of its last 50 training pairs" in sentences[0]


def test_held_out_accuracy_below_its_best_is_said_once():
    rows = [row(i, **({"val_accuracy": v} if v is not None else {})) for i, v in enumerate([0.7, None, 0.9, None, 0.8, None, 0.7, 0.6], start=1)]
    signs, sentences = run_monitor(rows)
    assert [HELD_OUT_FELL in s for s in signs] == [False] * 6 + [True, True]
    assert sentences == ["Held-out accuracy fell to 0.70 by step 7 from its best 0.90: DPO is overshooting; the best held-out adapter is kept as the final one."]


def test_replay_gives_a_resumed_stage_the_same_signs():
    rows = [row(i, accuracy=1.0, loss=0.01) for i in range(1, 41)] + [row(i, accuracy=0.2, loss=0.01 * i, winner=1.1, loser=1.3) for i in range(41, 81)]
    whole, _ = run_monitor(rows)
    resumed = HealthMonitor()
    resumed.replay(rows[:55])
    assert [resumed.update(r)[0] for r in rows[55:]] == whole[55:]


# the best held-out adapter -------------------------------------------------------------------------
def test_the_run_page_says_what_the_latest_dpo_rows_show():
    """The Train tab's status line (huvi.health.summary): the signs active now, what to do, the adapter kept."""
    motion = [{"stage": "motion", "step": 1, "loss": 0.1}]
    assert summary(motion) == "" and summary(motion + [row(1)]) == ""
    sick = [row(1, val_accuracy=0.8), row(2, health=[DEGRADING, ACCURACY_FELL], best_step=1)]
    text = summary(motion + sick)
    assert text.startswith("⚠ DPO health at step 2: the winners' and losers' own losses are rising") and "training accuracy fell" in text
    assert "lower dpo.learning_rate" in text and "Best held-out adapter so far: step 1 (held-out accuracy 0.80)" in text
    recovered = summary(sick + [row(3, best_step=1)])
    assert not recovered.startswith("⚠") and "earlier (accuracy fell, degrading)" in recovered


@pytest.fixture(scope="module")
def held_out_run(category, tmp_path_factory):
    """Tiny, a third of the pairs held out and scored every 2 of 8 DPO steps at a learning rate high
    enough that the best held-out check is not the last; stopped after DPO step 5 and resumed, so the
    best adapter has to survive the resume."""
    cfg = tiny_config(motion_steps=3, dpo_steps=8)
    cfg.data.holdout, cfg.dpo.eval_every, cfg.dpo.eval_samples, cfg.dpo.learning_rate = 0.35, 2, 2, 3e-2
    cfg.dpo.checkpoint_every, cfg.keep_checkpoints = 2, 10
    root = tmp_path_factory.mktemp("best") / "run"
    calls = {"n": 0}

    def stop_in_dpo() -> bool:
        calls["n"] += 1
        return calls["n"] == 3 + 5  # after motion's 3 steps, DPO step 5: past the checks of steps 2 and 4

    cfg.dpo.degrade_warning = 0.2
    monitors = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("huvi.trainer.HealthMonitor", lambda **kw: monitors.append(HealthMonitor(**kw)) or monitors[-1])
        assert train(cfg, category, root, show_progress=False, should_stop=stop_in_dpo).stopped
        train(cfg, category, root, resume=True, show_progress=False)
    assert [m.degrade for m in monitors] == [0.2, 0.2]  # the run's dpo.degrade_warning, before and after the resume
    return root


def test_the_final_dpo_adapter_is_the_best_held_out_one_across_a_resume(held_out_run):
    root = held_out_run
    rows = [r for r in metric_rows(root) if r["stage"] == "dpo"]
    assert [r["step"] for r in rows] == list(range(1, 9))  # the resume rewrote the rows after its checkpoint
    checks = {r["step"]: r["val_accuracy"] for r in rows if "val_accuracy" in r}
    assert sorted(checks) == [2, 4, 6, 8]
    best = max(checks, key=lambda s: (checks[s], -s))  # the earliest of the highest
    assert best in (2, 4), f"the best check must come before the resume for this test to mean anything: {checks}"
    assert rows[-1]["best_step"] == best
    run = Run(root)
    final = load_file(str(run.adapter_path("dpo")))
    at_best = load_file(str(run.checkpoints / f"dpo-{best:06d}" / "adapter.safetensors"))
    assert final.keys() == at_best.keys() and all(torch.equal(final[k], at_best[k]) for k in final)
    with safe_open(str(run.adapter_path("dpo")), framework="pt") as fh:
        assert fh.metadata()["huvi.steps"] == str(best)
    assert not run.best_folder.exists()  # the kept copies go once the final adapter is written
    last = load_file(str(run.last_adapter_path("dpo")))
    at_last = load_file(str(run.checkpoints / "dpo-000008" / "adapter.safetensors"))
    assert all(torch.equal(last[k], at_last[k]) for k in last)
    assert math.isfinite(rows[-1]["val_accuracy"])
