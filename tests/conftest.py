"""Shared fixtures: offline environment, a small synthetic category, broken categories, one tiny run.

Everything runs on a CPU without network. The expensive fixtures (the category's clips, one
trained tiny run) are session-scoped and read-only; a test that changes a category copies it first
(`category_copy`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Before anything imports huggingface_hub or huvi.cache: no test may reach the network or write
# to the user's ~/.cache/huvi.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The tiny models gain nothing from intra-op threads, and OpenMP threads that spin-wait slow a
# forward pass down several-fold on a 2-core machine that is also running anything else.
os.environ.setdefault("OMP_NUM_THREADS", "1")
_SESSION_CACHE = tempfile.mkdtemp(prefix="huvi-test-cache-")
os.environ["HUVI_CACHE"] = _SESSION_CACHE  # per-session latent cache, removed at the end
# `python -m huvi train` takes the app's GPU lock in $HUVI_RUNS: a folder of the session's, not ./runs.
os.environ["HUVI_RUNS"] = os.path.join(_SESSION_CACHE, "runs")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import BAD_CASES, BadCategory, tiny_config  # noqa: E402
from huvi.config import HuviConfig  # noqa: E402
from huvi.synthetic import direction_category  # noqa: E402


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def category(tmp_path_factory) -> Path:
    """Six 32-frame 32x32 clips (rightward rated 4-5, leftward 1-2). Read-only: copy to modify."""
    return direction_category(tmp_path_factory.mktemp("category") / "squares", clips=6, seed=0, frames=32, size=32)


@pytest.fixture
def category_copy(category, tmp_path) -> Path:
    dest = tmp_path / "squares"
    shutil.copytree(category, dest)
    return dest


@pytest.fixture(params=sorted(BAD_CASES))
def bad_category(request, category_copy) -> BadCategory:
    """A copy of the category broken in one way; tests using it run once per case of BAD_CASES."""
    case = BAD_CASES[request.param]
    case.mutate(category_copy)
    return BadCategory(request.param, category_copy, case.message, case.decoding)


@dataclass
class TrainedRun:
    root: Path
    cfg: HuviConfig
    category: Path
    result: object  # huvi.trainer.TrainResult
    unet: torch.nn.Module  # the trainer's UNet after both stages, adapters attached
    base_before: dict[str, torch.Tensor]  # its state_dict right after it was built
    adapters_at_start: dict[str, dict[str, torch.Tensor]]  # adapter name -> its weights when added


@pytest.fixture(scope="session")
def trained_run(category, tmp_path_factory) -> TrainedRun:
    """Both stages of the tiny preset, 3 + 3 steps, observing the UNet the trainer builds.

    The trainer is only watched, through its model family's `load_denoiser` (keep the UNet and
    snapshot its base weights) and the `add_adapter` it imports (snapshot each adapter's initial weights).
    """
    import huvi.trainer as trainer_module
    from huvi.adapters import adapter_state_dict
    from huvi.families import family_class

    unets: list = []
    adapters: dict = {}
    cfg = tiny_config()
    family = family_class(cfg.model.family)
    real_load_unet, real_add_adapter = family.load_denoiser, trainer_module.add_adapter

    def load_unet(self, *args):
        unet = real_load_unet(self, *args)
        unets.append((unet, {k: v.detach().clone() for k, v in unet.state_dict().items()}))
        return unet

    def add_adapter(unet, name, adapter_cfg):
        real_add_adapter(unet, name, adapter_cfg)
        adapters[name] = {k: v.detach().clone() for k, v in adapter_state_dict(unet, name).items()}

    root = tmp_path_factory.mktemp("runs") / "trained"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(family, "load_denoiser", load_unet)
        mp.setattr(trainer_module, "add_adapter", add_adapter)
        result = trainer_module.train(cfg, category, root, show_progress=False)
    assert len(unets) == 1, f"the trainer built {len(unets)} UNets; the DPO reference must not be a copy"
    unet, base_before = unets[0]
    return TrainedRun(root, cfg, category, result, unet, base_before, adapters)
