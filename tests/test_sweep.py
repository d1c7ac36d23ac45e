"""examples/sweep.py: which stages a rerun of a sweep reuses. A motion stage reused under settings
it was not trained with would put wrong figures in the README's tables."""

import sys
from pathlib import Path

from huvi.config import load_config
from huvi.runs import Run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from sweep import MOTION_SETTINGS, motion_overrides, trained_with


def test_a_motion_stage_is_reused_across_dpo_and_pair_settings_only(tmp_path):
    sets = ["data.frames=8", "data.min_rating_gap=1", "data.holdout=0.2", "dpo.drift_weight=0.01", "motion.steps=7"]
    assert motion_overrides(sets) == ["data.frames=8", "motion.steps=7"]
    run = Run(tmp_path / "motion")
    run.root.mkdir()
    run.write_config(load_config("tiny", ["data.min_rating_gap=1"]))
    assert trained_with(run.root, load_config("tiny", ["data.min_rating_gap=2", "data.holdout=0.2", "dpo.beta=1000"]), MOTION_SETTINGS)
    assert not trained_with(run.root, load_config("tiny", ["data.stride=2"]), MOTION_SETTINGS)  # what the clips look like
    assert not trained_with(run.root, load_config("tiny", ["motion.steps=7"]), MOTION_SETTINGS)
    assert not trained_with(run.root, load_config("tiny", ["data.min_rating_gap=2"]))  # a DPO stage: all of its config
    assert trained_with(run.root, load_config("tiny", ["data.min_rating_gap=1"]))
