"""The model-family interface: the registry, its refusal of unknown names, the seam a flow-matching
family plugs into, and that the code which uses a family never names one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from huvi.config import load_config
from huvi.dpo import pair_errors
from huvi.errors import HuviError
from huvi.families import EXPORT_FORMATS, FAMILIES, family_class, family_for, smaller_preset
from huvi.families.base import ModelFamily

ROOT = Path(__file__).resolve().parent.parent

# The code that takes a family and must never name one: no import of a family's module or of a
# model class, no identifier, and no comparison with a string, that names a model.
FAMILY_USERS = [
    *(ROOT / "huvi" / f"{name}.py" for name in (
        "trainer", "stage_losses", "losses", "dpo", "diffusion", "evaluate", "generate", "dense", "previews",
        "cache", "export", "lora", "model_cache", "cli", "cli_args", "jobs",
    )),
    *(ROOT / "huvi" / "bench").glob("*.py"),
    *(ROOT / "ui").rglob("*.py"),
    ROOT / "app.py",
]
MODEL_WORDS = (
    "sd15", "animatediff", "unetmotion", "motionadapter", "unet2dcondition", "autoencoderkl", "cliptext", "ddpmscheduler",
    "wantransformer", "wanpipeline", "umt5", "flowmatch",
)


def _model_names(path: Path) -> list[str]:
    """Every import, identifier and compared string in `path` that names a model, as `line: text`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            texts = [node.module or "", *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            texts = [a.name for a in node.names]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, ast.Compare):
            texts = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        else:
            continue
        found += [f"{node.lineno}: {t}" for t in texts if any(w in t.lower().replace("_", "") for w in MODEL_WORDS) or t in FAMILIES]
    return found


def test_the_registry_resolves_sd15():
    model = load_config("tiny").model
    assert model.family == "sd15"
    family = family_for(model)
    assert isinstance(family, ModelFamily) and family.name == "sd15" and family.model is model
    assert family_class("sd15") is type(family)
    assert family.schedule.config.num_train_timesteps == 1000  # loaded on first use


def test_an_sd15_scheduler_saved_without_clip_sample_never_clips_the_latents(tmp_path):
    """A scheduler folder saved from a PNDMScheduler drops clip_sample (mirrors, conversions, the demo
    model); read as DDPM/DDIM that would clip the predicted x_0 to [-1, 1] and wash out every sample."""
    from dataclasses import replace

    from diffusers import PNDMScheduler

    from huvi.families.sd15.diffusion import SD15_SCHEDULER
    from huvi.families.sd15.full_size import SD15_PNDM
    from huvi.families.sd15.sampling import make_scheduler

    PNDMScheduler(**SD15_PNDM).save_pretrained(tmp_path / "scheduler")
    assert "clip_sample" not in (tmp_path / "scheduler" / "scheduler_config.json").read_text()
    family = family_for(replace(load_config("sd15-24gb").model, base=str(tmp_path)))
    assert family.schedule.config.beta_schedule == SD15_SCHEDULER["beta_schedule"] and not family.schedule.config.clip_sample
    ddim = make_scheduler("ddim", family.schedule)
    ddim.set_timesteps(10)
    latents = torch.full((1, 4, 2, 2, 2), 3.0)  # a saturated latent, as a vivid colour encodes
    step = ddim.step(torch.zeros_like(latents), ddim.timesteps[-1], latents).prev_sample  # eps 0: x_0 = x_t / sqrt(abar)
    assert step.min() > 3.0


@pytest.mark.parametrize("preset", ["tiny", "wan-tiny"])
def test_the_registry_names_each_familys_export_formats(preset):
    """The CLI's choices and the app's Export tab read the names from the registry, without model code."""
    family = family_for(load_config(preset).model)
    assert tuple(family.export_formats) == EXPORT_FORMATS[family.name]


def test_an_unknown_family_is_one_sentence_naming_the_valid_ones():
    with pytest.raises(HuviError) as err:
        family_class("wan99")
    assert str(err.value) == "Unknown model family 'wan99'; valid ones are: sd15, wan."
    with pytest.raises(HuviError) as err:
        load_config("tiny", ["model.family=wan99"])
    assert str(err.value) == "model.family must be one of sd15, wan, not 'wan99'."


def test_smaller_presets_come_from_the_families():
    assert smaller_preset("sd15-24gb") == "sd15-16gb"
    assert smaller_preset("tiny") is None


class _FlowMatching:
    """The seam a flow-matching family fills: x_t = (1 - s) x_0 + s eps with latent frame 0 clean,
    target v = eps - x_0 (timesteps are sigmas in [0, 1])."""

    def noisy_input(self, latents, noise, sigmas):
        s = sigmas.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise  # (b, c, f, h, w)
        return torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)

    def target(self, latents, noise, sigmas):
        return noise - latents

    def predict(self, model, noisy, sigmas, text):
        return model(noisy, sigmas, text)


def test_a_flow_matching_family_fits_the_dpo_forward_pass_unchanged():
    """pair_errors (the trainer's DPO step, evaluate's scoring) runs on any family's noising and target:
    the model sees frame 0 clean, and a zero prediction's error is |eps - x_0|^2 over frames 1.."""
    g = torch.Generator().manual_seed(0)
    latents_w, latents_l, noise = (torch.randn(2, 4, 3, 4, 4, generator=g) for _ in range(3))  # (n, c, f, h, w)
    latents = torch.cat([latents_w, latents_l])  # (2n, c, f, h, w): [winners; losers]
    seen = []

    class Zero(torch.nn.Module):
        def forward(self, noisy, sigmas, text):
            seen.append((noisy[:, :, 0], sigmas))
            return torch.zeros_like(noisy)

    model = Zero()
    errors = pair_errors(model, model, _FlowMatching(), latents_w, latents_l, torch.zeros(7, 8), noise, torch.tensor([0.3, 0.8]))
    expected = (noise.repeat(2, 1, 1, 1, 1) - latents)[:, :, 1:].pow(2).flatten(1).mean(dim=1)  # (2n,)
    torch.testing.assert_close(torch.cat(errors[:2]), expected)  # model: winners, losers
    torch.testing.assert_close(torch.cat(errors[2:]), expected)  # reference
    assert all(torch.equal(frame0, latents[:, :, 0]) for frame0, _ in seen)
    assert all(torch.equal(sigmas, torch.tensor([0.3, 0.8, 0.3, 0.8])) for _, sigmas in seen)


@pytest.mark.parametrize("path", FAMILY_USERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_that_uses_a_family_never_names_a_model(path):
    assert _model_names(path) == []


@pytest.mark.parametrize("preset", ["tiny", "wan-tiny"])
def test_min_noise_keeps_dpo_timesteps_and_scoring_in_the_noisier_share(preset):
    """dpo.min_noise = 0.5: training draws and held-out scoring both come from the upper half of the
    family's timestep distribution (quantiles above 0.5); 0 leaves both exactly as before."""
    family = family_for(load_config(preset).model)
    everywhere = family.sample_timesteps(4000, torch.Generator().manual_seed(0))
    upper = family.sample_timesteps(4000, torch.Generator().manual_seed(0), 0.5)
    cut = everywhere.float().quantile(0.5).item()
    assert (upper.float() >= cut - 0.02 * 1000).all() and upper.float().min() < cut + 0.02 * 1000
    assert torch.equal(family.sample_timesteps(5, torch.Generator().manual_seed(3), 0.0), family.sample_timesteps(5, torch.Generator().manual_seed(3)))
    scored = family.eval_timesteps(8, 0.5)
    assert scored.float().min() >= cut - 0.02 * 1000 and (scored.diff() > 0).all()
    assert torch.equal(family.eval_timesteps(8, 0.0), family.eval_timesteps(8))
    with pytest.raises(HuviError, match="dpo.min_noise must be in"):
        load_config(preset, ["dpo.min_noise=1"])
