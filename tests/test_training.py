"""Two-stage training on the tiny preset: what changes, what stays frozen, the run folder, resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import (
    DPO_STEPS,
    MOTION_STEPS,
    distinct_score_pairs,
    folder_snapshot,
    metric_rows,
    read_meta,
    tiny_config,
    without_timing,
    write_meta,
)
from huvi.adapters import (
    DPO,
    MOTION,
    active_adapters,
    adapter_parameters,
    adapter_state_dict,
    add_adapter,
    load_adapter,
    read_adapter_config,
    set_active,
)
from huvi.cache import cache_category
from huvi.category import load_category
from huvi.config import HuviConfig
from huvi.diffusion import per_sample_error
from huvi.dpo import pair_errors
from huvi.errors import HuviError
from huvi.evaluate import evaluate_run, score_pairs
from huvi.families.sd15.diffusion import first_frame_noisy, predict
from huvi.families import family_for
from huvi.families.sd15.models import load_unet
from huvi.pairs import form_pairs
from huvi.runs import Run, optimizer_from_tensors, optimizer_to_tensors
from huvi.trainer import train


def base_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's own weights under their pre-peft names (LoRA layers wrap them as `.base_layer`)."""
    return {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if "lora_" not in k}


# the shared run ----------------------------------------------------------------------------------
def test_metrics_have_one_row_per_step(trained_run):
    rows = metric_rows(trained_run.root)
    expected = [("motion", s) for s in range(1, MOTION_STEPS + 1)] + [("dpo", s) for s in range(1, DPO_STEPS + 1)]
    assert [(r["stage"], r["step"]) for r in rows] == expected
    for row in rows:
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["lr"] > 0
    for row in rows[MOTION_STEPS:]:
        assert {"accuracy", "reward_margin", "loss_w", "loss_l", "ref_loss_w", "ref_loss_l", "grad_norm"} <= set(row)
    assert trained_run.result.stopped is False
    assert trained_run.result.last["motion"] == rows[MOTION_STEPS - 1]
    assert trained_run.result.last["dpo"] == rows[-1]


def test_first_dpo_step_starts_at_ln2(trained_run):
    """The DPO adapter starts as a zero update, so model == reference: inside = 0 for every pair."""
    first = next(r for r in metric_rows(trained_run.root) if r["stage"] == "dpo")
    assert first["step"] == 1
    assert abs(first["loss"] - math.log(2)) < 1e-6
    assert first["accuracy"] == 0.5
    assert first["reward_margin"] == 0.0
    assert first["loss_w"] == first["ref_loss_w"] and first["loss_l"] == first["ref_loss_l"]
    later = [r for r in metric_rows(trained_run.root) if r["stage"] == "dpo"][1:]
    assert any(abs(r["loss"] - math.log(2)) > 1e-4 for r in later)  # and it moves once trained


def test_run_folder_config_reloads_unchanged(trained_run):
    run = Run(trained_run.root)
    assert run.read_config() == trained_run.cfg
    assert HuviConfig.from_dict(yaml.safe_load(run.config_path.read_text())) == trained_run.cfg


def test_final_adapters_are_written_and_load(trained_run):
    run = Run(trained_run.root)
    for name, cfg in ((MOTION, trained_run.cfg.motion.adapter), (DPO, trained_run.cfg.dpo.adapter)):
        path = run.adapter_path(name)
        assert path == trained_run.root / "adapters" / f"{name}.safetensors"
        assert path.is_file()
        assert read_adapter_config(path) == cfg
        stored = load_file(str(path))
        in_memory = adapter_state_dict(trained_run.unet, name)
        assert stored.keys() == in_memory.keys() and stored
        for key, value in in_memory.items():
            assert torch.equal(stored[key], value.cpu()), key
    fresh = load_unet(trained_run.cfg.model)
    load_adapter(fresh, run.adapter_path(MOTION), MOTION)
    load_adapter(fresh, run.adapter_path(DPO), DPO)
    for name in (MOTION, DPO):
        loaded = adapter_state_dict(fresh, name)
        for key, value in adapter_state_dict(trained_run.unet, name).items():
            assert torch.equal(loaded[key], value), key


def test_base_unet_weights_never_change(trained_run):
    after = base_weights(trained_run.unet)
    assert after.keys() == trained_run.base_before.keys()
    changed = [k for k, v in after.items() if not torch.equal(v, trained_run.base_before[k])]
    assert changed == []
    assert not any(p.requires_grad for n, p in trained_run.unet.named_parameters() if "lora_" not in n)


def test_motion_lora_is_trained(trained_run):
    start = trained_run.adapters_at_start[MOTION]
    final = adapter_state_dict(trained_run.unet, MOTION)
    assert final.keys() == start.keys()
    assert all(torch.count_nonzero(v) == 0 for k, v in start.items() if "lora_B" in k)  # zero update at start
    moved = [k for k in final if not torch.equal(final[k], start[k])]
    moved_b = [k for k in moved if "lora_B" in k and torch.count_nonzero(final[k]) > 0]
    assert moved_b, "no motion LoRA up-projection left zero"
    # the spatial self-attention LoRA layers (attn1 of the SD blocks) all learn
    spatial_b = [k for k in final if "lora_B" in k and ".attentions." in k and ".attn1." in k]
    assert spatial_b and set(spatial_b) <= set(moved_b)


def test_motion_lora_trains_the_temporal_layers(trained_run):
    final = adapter_state_dict(trained_run.unet, MOTION)
    temporal_b = [k for k in final if "lora_B" in k and ".motion_modules." in k]
    assert temporal_b
    assert any(torch.count_nonzero(final[k]) > 0 for k in temporal_b)


def test_motion_adapter_is_frozen_in_the_dpo_stage(trained_run):
    """motion.safetensors is written when the motion stage ends; DPO must leave those weights alone."""
    after_dpo = adapter_state_dict(trained_run.unet, MOTION)
    at_motion_end = load_file(str(Run(trained_run.root).adapter_path(MOTION)))
    for key, value in after_dpo.items():
        assert torch.equal(value, at_motion_end[key]), key
    assert not any(p.requires_grad for p in adapter_parameters(trained_run.unet, MOTION))
    assert all(p.requires_grad for p in adapter_parameters(trained_run.unet, DPO))
    start, final = trained_run.adapters_at_start[DPO], adapter_state_dict(trained_run.unet, DPO)
    assert any(not torch.equal(final[k], start[k]) for k in final)


# the DPO reference is the same UNet with only the motion adapter ----------------------------------
@pytest.fixture(scope="module")
def two_adapter_unet(trained_run):
    """A fresh tiny UNet with the run's motion and (trained, non-zero) dpo adapters, dpo trainable."""
    unet = load_unet(trained_run.cfg.model)
    load_adapter(unet, Run(trained_run.root).adapter_path(MOTION), MOTION)
    load_adapter(unet, Run(trained_run.root).adapter_path(DPO), DPO)
    set_active(unet, [MOTION, DPO], trainable=DPO)
    return unet.eval()


def _tuner_layers(unet):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def test_pair_errors_reference_is_the_motion_only_model(two_adapter_unet):
    unet = two_adapter_unet
    family = family_for(tiny_config().model)
    g = torch.Generator().manual_seed(0)
    lat_w, lat_l = torch.randn(2, 4, 8, 16, 16, generator=g), torch.randn(2, 4, 8, 16, 16, generator=g)  # (n, c, f, h, w)
    noise = torch.randn(2, 4, 8, 16, 16, generator=g)
    timesteps = torch.tensor([150, 700])
    text = torch.randn(77, 32, generator=g)  # (tokens, dim)

    model_w, model_l, ref_w, ref_l = pair_errors(unet, unet, family, lat_w, lat_l, text, noise, timesteps)

    # what the reference should be, computed separately: [winners; losers], same noise and timestep
    latents = torch.cat([lat_w, lat_l])
    noise2, t2 = noise.repeat(2, 1, 1, 1, 1), timesteps.repeat(2)
    noisy = first_frame_noisy(latents, noise2, t2, family.schedule)
    texts = text.unsqueeze(0).expand(4, -1, -1)
    with torch.no_grad():
        with active_adapters(unet, [MOTION]):
            ref = per_sample_error(predict(unet, noisy, t2, texts), noise2)
        full = per_sample_error(predict(unet, noisy, t2, texts), noise2)
    torch.testing.assert_close(torch.cat([ref_w, ref_l]), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([model_w, model_l]).detach(), full, rtol=0, atol=1e-6)
    assert (full - ref).abs().max() > 1e-6, "the dpo adapter should change the errors (else this test proves nothing)"

    # afterwards: both adapters active again, dpo still trainable, motion and base still frozen
    layers = _tuner_layers(unet)
    assert layers
    for layer in layers:
        assert set(layer.active_adapters) == {MOTION, DPO}
    assert all(p.requires_grad for p in adapter_parameters(unet, DPO))
    assert not any(p.requires_grad for p in adapter_parameters(unet, MOTION))
    assert not any(p.requires_grad for n, p in unet.named_parameters() if "lora_" not in n)
    assert not ref_w.requires_grad and model_w.requires_grad

    # the gradient of the model errors reaches the dpo adapter only
    unet.zero_grad(set_to_none=True)
    (model_w.sum() - model_l.sum()).backward()
    assert all(p.grad is not None for p in adapter_parameters(unet, DPO))
    assert any(p.grad.abs().sum() > 0 for p in adapter_parameters(unet, DPO))
    assert all(p.grad is None for p in adapter_parameters(unet, MOTION))
    unet.zero_grad(set_to_none=True)


def test_active_adapters_restores_after_an_error(two_adapter_unet):
    unet = two_adapter_unet
    with pytest.raises(RuntimeError, match="boom"):
        with active_adapters(unet, [MOTION]):
            assert all(list(layer.active_adapters) == [MOTION] for layer in _tuner_layers(unet))
            raise RuntimeError("boom")
    assert all(set(layer.active_adapters) == {MOTION, DPO} for layer in _tuner_layers(unet))
    assert all(p.requires_grad for p in adapter_parameters(unet, DPO))


# evaluation --------------------------------------------------------------------------------------
def test_evaluate_run_scores_every_pair_at_the_run_s_rating_gap(trained_run):
    scores = evaluate_run(trained_run.root, trained_run.category, samples=2, show_progress=False)
    ratings, gap = read_meta(trained_run.category)["scores"], trained_run.cfg.data.min_rating_gap
    far = [(w, l) for w, l in distinct_score_pairs(ratings) if ratings[w] - ratings[l] >= gap]
    assert (gap, len(distinct_score_pairs(ratings))) == (2, 13)  # tiny's gap: the 5-4 and 2-1 pairs are left out
    assert scores.pairs == len(far) == 9
    assert 0.0 <= scores.accuracy <= 1.0
    assert math.isfinite(scores.reward_margin) and scores.reward_margin != 0.0
    assert scores.as_dict()["pairs"] == 9


def test_an_untrained_dpo_adapter_scores_exactly_chance(trained_run):
    cfg = trained_run.cfg
    unet = load_unet(cfg.model)
    load_adapter(unet, Run(trained_run.root).adapter_path(MOTION), MOTION)
    add_adapter(unet, DPO, cfg.dpo.adapter)  # zero update: model == reference
    set_active(unet, [MOTION, DPO], trainable=None)
    category = load_category(trained_run.category)
    latents = cache_category(category, cfg, lambda: pytest.fail("cache should be warm"), torch.device("cpu"), show_progress=False)
    pairs = form_pairs(category.scores, cfg.seed)[:4]
    scores = score_pairs(
        unet, family_for(cfg.model), latents.clips, pairs, latents.prompt_embeds, cfg.data.frames, cfg.dpo.beta,
        2, cfg.seed, torch.device("cpu"),
    )
    assert scores.pairs == 4
    assert scores.reward_margin == 0.0
    assert scores.accuracy == 0.5


def test_same_config_gives_the_same_run_whatever_the_global_rng(category, tmp_path):
    cfg = tiny_config(motion_steps=1)
    adapters = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # e.g. whatever an app did before starting the run
        train(cfg, category, tmp_path / f"run{global_seed}", stages=["motion"], show_progress=False)
        adapters.append(load_file(str(tmp_path / f"run{global_seed}" / "adapters" / "motion.safetensors")))
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_the_drift_guard_trains_through_the_trainer_and_is_silent_until_the_model_moves(trained_run, tmp_path):
    """dpo.drift_weight through train() with the preset's 8-bit AdamW: zero at the reference, so DPO
    step 1 logs what the preset's run (its guard at 0.003) logs (its gradient within float noise) and
    ln 2; once the adapter has moved the weight changes training."""
    cfg = tiny_config()
    cfg.dpo.drift_weight = 1.0  # over 300x the preset's, so 3 steps show it
    train(cfg, trained_run.category, tmp_path / "run", show_progress=False)
    got, want = without_timing(metric_rows(tmp_path / "run")), without_timing(metric_rows(trained_run.root))
    dpo_got, dpo_want = [r for r in got if r["stage"] == "dpo"], [r for r in want if r["stage"] == "dpo"]
    assert [r for r in got if r["stage"] == "motion"] == [r for r in want if r["stage"] == "motion"]
    assert {k: v for k, v in dpo_got[0].items() if k != "grad_norm"} == {k: v for k, v in dpo_want[0].items() if k != "grad_norm"}
    assert dpo_got[0]["grad_norm"] == pytest.approx(dpo_want[0]["grad_norm"], rel=1e-4)
    assert dpo_got[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert dpo_got[2]["loss"] != dpo_want[2]["loss"]


# run folders -------------------------------------------------------------------------------------
def test_a_new_run_refuses_a_non_empty_folder(category, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    before = folder_snapshot(occupied)
    with pytest.raises(HuviError, match="already holds files"):
        train(tiny_config(), category, occupied, show_progress=False)
    assert folder_snapshot(occupied) == before


def test_a_new_run_refuses_an_existing_run(trained_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run.root, copy)
    before = folder_snapshot(copy)
    with pytest.raises(HuviError, match="--resume"):
        train(trained_run.cfg, trained_run.category, copy, show_progress=False)
    assert folder_snapshot(copy) == before


# stop and resume ---------------------------------------------------------------------------------
def stop_after(run_dir, stage: str, step: int):
    """A should_stop that says yes once the run's last metrics row is (stage, step)."""

    def should_stop() -> bool:
        rows = metric_rows(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        return bool(rows) and (rows[-1]["stage"], rows[-1]["step"]) == (stage, step)

    return should_stop


def test_checkpoints_hold_the_8bit_optimizer_state(trained_run):
    """The tiny preset steps with bitsandbytes' 8-bit AdamW, as the GPU presets do. Its quantized
    moments, nested under __bnb_optimizer_quant_state__, are in the checkpoint (the GPU presets
    once crashed writing them) and come back as the optimizer gave them."""
    import bitsandbytes as bnb

    motion = next(ref for ref in Run(trained_run.root).list_checkpoints() if ref.stage == "motion")
    tensors, state = Run.load_checkpoint(motion)
    stored = tensors["optimizer"]
    quantized = [k for k, v in stored.items() if k.endswith("__bnb_optimizer_quant_state__.state1") and v.dtype == torch.uint8]
    assert quantized and any(k.endswith(".absmax1") for k in stored)
    restored = optimizer_from_tensors(stored, state["optimizer"])
    pid = int(quantized[0].split(".")[0])
    assert restored["state"][pid]["__bnb_optimizer_quant_state__"]["state1"].dtype == torch.uint8

    # a real optimizer's state survives the split and the join, shared quantization maps included
    params = [torch.nn.Parameter(torch.randn(64, 128)), torch.nn.Parameter(torch.randn(16))]
    optimizer = bnb.optim.AdamW8bit(params, lr=1e-3)
    for _ in range(2):
        sum(p.sum() for p in params).backward()
        optimizer.step()
        optimizer.zero_grad()
    before = optimizer.state_dict()
    flat, rest = optimizer_to_tensors(before)
    again = optimizer_from_tensors(flat, json.loads(json.dumps(rest)))  # state.json holds the rest
    fresh = bnb.optim.AdamW8bit(params, lr=1e-3)
    fresh.load_state_dict(again)
    after = fresh.state_dict()
    for pid, entry in before["state"].items():
        for key, value in entry["__bnb_optimizer_quant_state__"].items():
            assert torch.equal(after["state"][pid]["__bnb_optimizer_quant_state__"][key], value), (pid, key)


@pytest.mark.parametrize(
    "stage, step", [("motion", 2), ("motion", MOTION_STEPS), ("dpo", 2)]
)
def test_stop_and_resume_equals_an_uninterrupted_run(trained_run, tmp_path, stage, step):
    run_dir = tmp_path / "run"
    stopped = train(trained_run.cfg, trained_run.category, run_dir, should_stop=stop_after(run_dir, stage, step), show_progress=False)
    assert stopped.stopped is True
    rows = metric_rows(run_dir)
    assert (rows[-1]["stage"], rows[-1]["step"]) == (stage, step)
    assert (run_dir / "checkpoints" / f"{stage}-{step:06d}" / "state.json").is_file()
    assert not Run(run_dir).adapter_path(stage).exists()  # a stage's adapter is written when it ends

    resumed = train(tiny_config(), trained_run.category, run_dir, resume=True, show_progress=False)
    assert resumed.stopped is False
    assert without_timing(metric_rows(run_dir)) == without_timing(metric_rows(trained_run.root))
    for name in (MOTION, DPO):
        got = load_file(str(Run(run_dir).adapter_path(name)))
        want = load_file(str(Run(trained_run.root).adapter_path(name)))
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name}: {key}"


def test_resume_refuses_changed_ratings(trained_run, tmp_path, category_copy):
    run_dir = tmp_path / "run"
    train(trained_run.cfg, category_copy, run_dir, should_stop=stop_after(run_dir, "dpo", 1), show_progress=False)
    meta = read_meta(category_copy)
    names = sorted(meta["scores"])
    meta["scores"][names[0]], meta["scores"][names[-1]] = meta["scores"][names[-1]], meta["scores"][names[0]]
    write_meta(category_copy, meta)
    with pytest.raises(HuviError, match="changed since this run started"):
        train(trained_run.cfg, category_copy, run_dir, resume=True, show_progress=False)
