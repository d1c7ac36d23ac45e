"""Preference pairs from ratings, and the typed config (presets, --set overrides, YAML round trip)."""

from __future__ import annotations

import itertools

import pytest
import yaml

from helpers import distinct_score_pairs
from huvi.config import HuviConfig, StageConfig, load_config, parse_overrides, preset_names
from huvi.errors import HuviError
from huvi.optim import lr_factor
from huvi.families.sd15.targets import MOTION_TARGETS
from huvi.pairs import ExplicitPair, Pair, form_pairs, split_pairs

SCORES = {"a.mp4": 5, "b.mp4": 3, "c.mp4": 3, "d.mp4": 1, "e.mp4": 4, "f.mp4": 2}


# pairs -------------------------------------------------------------------------------------------
def test_every_distinct_score_pair_once_with_the_higher_score_winning():
    pairs = form_pairs(SCORES, seed=0)
    as_tuples = [(p.winner, p.loser) for p in pairs]
    assert len(as_tuples) == len(set(as_tuples))  # no duplicates
    assert set(as_tuples) == distinct_score_pairs(SCORES)
    assert len(pairs) == 15 - 1  # C(6, 2) minus the one tie (b, c)
    for p in pairs:
        assert SCORES[p.winner] > SCORES[p.loser]


def test_equal_scores_never_pair():
    pairs = form_pairs(SCORES, seed=3)
    assert not any({p.winner, p.loser} == {"b.mp4", "c.mp4"} for p in pairs)
    assert form_pairs({"x.mp4": 3, "y.mp4": 3, "z.mp4": 3}, seed=0) == []
    assert form_pairs({"x.mp4": 2, "y.mp4": 2, "z.mp4": 4}, seed=0) != []


def test_a_rating_gap_leaves_out_the_close_ratings_and_keeps_explicit_pairs():
    """data.min_rating_gap 2 (the CPU presets'): 4-vs-5 and 1-vs-2 pairs say more about rating noise."""
    pairs = form_pairs(SCORES, seed=0, min_gap=2)
    assert {(p.winner, p.loser) for p in pairs} == {w_l for w_l in distinct_score_pairs(SCORES) if SCORES[w_l[0]] - SCORES[w_l[1]] >= 2}
    assert len(pairs) == 14 - 6  # 5-4, 4-3 twice, 3-2 twice and 2-1 are 1 apart
    explicit = [ExplicitPair("a.mp4", "e.mp4", winner="b")]  # a person's own pair is kept at any gap
    assert Pair("e.mp4", "a.mp4") in form_pairs(SCORES, seed=0, explicit=explicit, min_gap=4)
    with pytest.raises(HuviError, match="data.min_rating_gap must be from 1 to 4"):
        load_config("tiny", ["data.min_rating_gap=0"])
    assert load_config("demo").data.min_rating_gap == load_config("tiny").data.min_rating_gap == 2
    assert load_config("sd15-24gb").data.min_rating_gap == 1  # HuViDPO's any two different ratings, unmeasured on real models


def test_order_is_fixed_by_the_seed_alone():
    first = form_pairs(SCORES, seed=11)
    assert form_pairs(SCORES, seed=11) == first
    assert form_pairs(dict(reversed(list(SCORES.items()))), seed=11) == first  # not by dict order
    other = form_pairs(SCORES, seed=12)
    assert other != first
    assert set(other) == set(first)


def test_two_clips_give_one_pair():
    assert form_pairs({"lo.mp4": 1, "hi.mp4": 2}, seed=5) == [Pair("hi.mp4", "lo.mp4")]


def test_split_pairs_holds_out_the_first_share():
    pairs = form_pairs(SCORES, seed=0)  # 14 pairs
    train, held = split_pairs(pairs, 0.25)
    assert held == pairs[:4]  # round(0.25 * 14) = 4 (3.5 rounds to the even 4)
    assert train == pairs[4:]
    assert split_pairs(pairs, 0.0) == (pairs, [])
    train, held = split_pairs(pairs, 0.01)
    assert len(held) == 1 and len(train) == 13  # at least one held out
    train, held = split_pairs(pairs, 0.99)
    assert len(train) == 1 and len(held) == 13  # at least one left to train on
    one = pairs[:1]
    assert split_pairs(one, 0.5) == (one, [])


# config ------------------------------------------------------------------------------------------
def test_presets_are_listed():
    names = preset_names()
    assert "tiny" in names
    assert {"sd15-12gb", "sd15-16gb", "sd15-24gb"} <= set(names)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips_through_yaml(name):
    cfg = load_config(name)
    assert isinstance(cfg, HuviConfig)
    assert cfg.preset == name
    again = HuviConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


def test_tiny_preset_needs_no_download():
    cfg = load_config("tiny")
    assert cfg.model.source == "tiny"
    assert (cfg.data.width, cfg.data.height) == (32, 32)
    assert cfg.optim.optimizer == "adamw8bit"  # the GPU presets' optimizer: tiny differs in sizes


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(HuviError, match="tiny"):
        load_config("no-such-preset")


def test_set_style_overrides():
    assert parse_overrides(["dpo.beta=2500"]) == {"dpo": {"beta": 2500}}
    assert parse_overrides(["data.hflip=false", "dpo.adapter.rank=4", "model.base=some/repo"]) == {
        "data": {"hflip": False},
        "dpo": {"adapter": {"rank": 4}},
        "model": {"base": "some/repo"},
    }
    flip = not load_config("tiny").data.hflip  # the opposite of the preset's value
    cfg = load_config("tiny", ["dpo.beta=2500", f"data.hflip={str(flip).lower()}", "seed=7", "dpo.adapter.rank=4"])
    assert cfg.dpo.beta == 2500.0 and isinstance(cfg.dpo.beta, float)
    assert cfg.data.hflip is flip
    assert cfg.seed == 7
    assert cfg.dpo.adapter.rank == 4
    # the rest of the preset is kept
    assert cfg.model.source == "tiny" and cfg.data.width == 32
    # dict overrides (what the tests and app use) merge the same way
    assert load_config("tiny", {"dpo": {"beta": 2500}}) == load_config("tiny", ["dpo.beta=2500"])


@pytest.mark.parametrize(
    "override, named",
    [
        ("dpo.betta=1", "dpo.betta"),  # unknown key
        ("nonsense=1", "nonsense"),
        ("dpo.adapter.rnk=3", "dpo.adapter.rnk"),
        ("data.frames=eight", "data.frames"),  # wrong type
        ("data.hflip=3", "data.hflip"),
        ("seed=1.5", "seed"),
        ("dpo.steps=abc", "dpo.steps"),
        ("dpo=3", "dpo"),  # a group given a value
        ("dpo.beta=-1", "dpo.beta"),  # bad values
        ("model.attention=dense", "model.attention"),
        ("model.source=hub", "model.source"),
        ("data.width=30", "data.width"),
        ("data.holdout=1.0", "data.holdout"),
        ("data.frames=1", "data.frames"),
        ("optim.optimizer=sgd", "optim.optimizer"),
        ("precision=fp8", "precision"),
        ("dpo.adapter.targets=(unclosed", "targets"),
        ("dpo.steps=0", "steps"),
        ("motion.learning_rate=0", "learning_rate"),
        ("dpo.adapter.rank=0", "rank"),
    ],
)
def test_bad_settings_name_the_key(override, named):
    with pytest.raises(HuviError) as info:
        load_config("tiny", [override])
    assert named in str(info.value)


@pytest.mark.parametrize("override, named", [("dpo.steps=0", "dpo.steps"), ("dpo.adapter.rank=0", "dpo.adapter.rank")])
def test_bad_stage_settings_name_the_full_key(override, named):
    with pytest.raises(HuviError) as info:
        load_config("tiny", [override])
    assert named in str(info.value)


def test_malformed_set_is_an_error():
    with pytest.raises(HuviError, match="key=value"):
        parse_overrides(["dpo.beta"])
    with pytest.raises(HuviError, match="key=value"):
        parse_overrides(["=3"])


def test_from_dict_refuses_unknown_and_mistyped_keys():
    with pytest.raises(HuviError, match="Unknown setting data.fps"):
        HuviConfig.from_dict({"data": {"fps": 8}})
    with pytest.raises(HuviError, match="log_every must be a int"):
        HuviConfig.from_dict({"log_every": "often"})
    with pytest.raises(HuviError, match="data.hflip must be a bool"):
        HuviConfig.from_dict({"data": {"hflip": "yes"}})


def test_a_partial_adapter_override_keeps_the_stage_defaults():
    assert load_config("sd15-24gb").motion.adapter.targets == MOTION_TARGETS  # no override: fine
    assert load_config("sd15-24gb", ["motion.adapter.rank=4"]).motion.adapter.targets == MOTION_TARGETS
    assert load_config("sd15-24gb", ["dpo.adapter.rank=8"]).dpo.adapter.dropout == 0.1
    assert load_config("sd15-12gb").motion.adapter.targets == MOTION_TARGETS  # the preset sets rank only


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_warms_up_linearly_then_holds_or_decays_to_zero(schedule):
    stage = StageConfig(steps=100, warmup_steps=4, lr_schedule=schedule)
    factors = [lr_factor(step, stage) for step in range(stage.steps)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # (step + 1) / (warmup + 1)
    assert factors[4] == 1.0
    if schedule == "constant":
        assert set(factors[4:]) == {1.0}
    else:
        assert all(a > b for a, b in itertools.pairwise(factors[4:]))  # strictly decreasing
        assert factors[52] == pytest.approx(0.5)  # halfway through the decay
        assert lr_factor(stage.steps, stage) == pytest.approx(0.0)  # zero once the last step is taken
