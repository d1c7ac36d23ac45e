"""LoRA export of a wan-tiny run: the diffusers file loads into a WanPipeline as its card says, the comfy
file converts back through diffusers' own converter and maps key for key through ComfyUI's Load LoRA, and
every layer's effective weight change (alpha / rank included) equals the trained adapters'."""

from __future__ import annotations

import json
import re
import runpy
import shutil

import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from helpers import export_every_format, exported_files, run_to_export
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from huvi.adapters import DPO, MOTION, load_adapter, set_active
from huvi.catalogue import PresetChoice
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.export import export_run, run_formats
from huvi.families.wan import tiny
from huvi.families.wan.card import render_card
from huvi.families.wan.export import HUB_IDS, export_metadata, wan_version
from huvi.families.wan.models import load_transformer
from huvi.lora import read_lora
from huvi.runs import Run
from huvi.workspace import Workspace

PROMPT = "a square moving right"


@pytest.fixture(scope="module")
def run_dir(category, tmp_path_factory):
    """One wan-tiny step per stage, the up weights then perturbed so every layer's update is clearly non-zero
    (one step leaves them near zero); the motion adapter (rank 16, alpha 16) covers attention and FFN, the DPO
    adapter (rank 16, alpha 32: scale 2) self-attention only, so merged self-attention layers hold both."""
    cfg = load_config("wan-tiny", {"motion": {"steps": 1}, "dpo": {"steps": 1}})
    return run_to_export(cfg, category, tmp_path_factory.mktemp("wan-export") / "run", PROMPT, noise=0.05)


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory):
    """(format, merge) -> ExportResult, each in its own folder."""
    return export_every_format(run_dir, tmp_path_factory.mktemp("wan-exports"))


@pytest.fixture(scope="module")
def trained_deltas(run_dir) -> dict[str, torch.Tensor]:
    """Module -> what the run's two adapters add to its weight: sum of (alpha / rank) up @ down, (out, in)."""
    deltas: dict[str, torch.Tensor] = {}
    for name in (MOTION, DPO):
        _, layers, _ = read_lora(Run(run_dir).adapter_path(name))
        for module, layer in layers.items():
            deltas[module] = deltas.get(module, 0) + layer.alpha / layer.rank * layer.up @ layer.down
    return deltas


def assert_same_deltas(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for module, delta in want.items():
        torch.testing.assert_close(got[module], delta, rtol=1e-5, atol=1e-6, msg=module)


def loaded_deltas(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Module -> the weight change of its active LoRA adapters, as peft applies it (scaling included)."""
    return {
        name: sum(m.get_delta_weight(adapter) for adapter in m.active_adapters if adapter in m.lora_A)
        for name, m in transformer.named_modules()
        if isinstance(m, LoraLayer)
    }


def card_pipeline(result, tmp_path, monkeypatch):
    """Run the model card's diffusers code, all but its last line (which renders a video), beside the files."""
    code = result.card.read_text().split("```python\n")[1].split("\n```")[0].splitlines()
    assert code[-1].startswith("video = pipe(")
    script = tmp_path / "card_code.py"
    script.write_text("\n".join(code[:-1]))
    monkeypatch.chdir(result.card.parent)
    return runpy.run_path(str(script))["pipe"]


# diffusers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, merge", [("diffusers", False), ("diffusers", True), ("comfy", False)])
def test_the_card_code_loads_the_export_into_a_wan_pipeline(exports, fmt, merge, trained_deltas, tmp_path, monkeypatch):
    """WanPipeline.load_lora_weights, as the card shows it: every trained layer gets exactly the run's update."""
    pipe = card_pipeline(exports[fmt, merge], tmp_path, monkeypatch)
    assert_same_deltas(loaded_deltas(pipe.transformer), trained_deltas)


def test_the_loaded_pipeline_predicts_what_the_run_predicts(run_dir, exports, tmp_path, monkeypatch):
    """The same velocity from the transformer with the diffusers export loaded as from the run's own model."""
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 16, 3, 8, 8, generator=g)  # (b, c, f', h, w)
    text = torch.randn(1, tiny.TOKENS, tiny.TEXT_DIM, generator=g)  # (b, tokens, dim)
    run_model = load_transformer(load_config("wan-tiny").model)
    for name in (MOTION, DPO):
        load_adapter(run_model, Run(run_dir).adapter_path(name), name)
    set_active(run_model, [MOTION, DPO], trainable=None)
    pipe = card_pipeline(exports["diffusers", False], tmp_path, monkeypatch)
    with torch.no_grad():
        want = run_model.eval()(noisy, torch.tensor([500]), text).sample
        got = pipe.transformer(noisy, torch.tensor([500]), text).sample
        base = load_transformer(load_config("wan-tiny").model)(noisy, torch.tensor([500]), text).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (base - want).abs().max() > 1e-2  # the adapters change the output: the comparison means something


# comfy ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("merge", [False, True])
def test_comfy_export_converts_back_through_diffusers(exports, merge, trained_deltas):
    """diffusers' own reader of ComfyUI-format Wan LoRAs takes every key (it raises on a leftover) and folds
    each layer's alpha / rank into the weights it returns, so up @ down is the layer's update."""
    deltas: dict[str, torch.Tensor] = {}
    for path in exports["comfy", merge].files:
        tensors = load_file(str(path))
        assert all(re.fullmatch(r"diffusion_model\.blocks\.\d+\.\S+\.(lora_down\.weight|lora_up\.weight|alpha)", k) for k in tensors)
        converted = _convert_non_diffusers_wan_lora_to_diffusers(dict(tensors))
        for key in converted:
            if key.endswith(".lora_A.weight"):
                module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
                update = converted[f"transformer.{module}.lora_B.weight"] @ converted[key]  # (out, in)
                deltas[module] = deltas.get(module, 0) + update
    assert_same_deltas(deltas, trained_deltas)


def original_wan_layout(blocks: int) -> list[str]:
    """The weights of a Wan transformer checkpoint in its original layout (Wan-Video's wan/modules/model.py,
    whose names ComfyUI's comfy/ldm/wan/model.py keeps): what ComfyUI's model holds under `diffusion_model.`."""
    linear = ("weight", "bias")
    top = [f"{m}.{p}" for m in ("patch_embedding", "text_embedding.0", "text_embedding.2", "time_embedding.0",
                                "time_embedding.2", "time_projection.1", "head.head") for p in linear] + ["head.modulation"]
    block = ["modulation", "norm3.weight", "norm3.bias"]
    for attention in ("self_attn", "cross_attn"):
        block += [f"{attention}.{m}.{p}" for m in "qkvo" for p in linear] + [f"{attention}.norm_q.weight", f"{attention}.norm_k.weight"]
    block += [f"ffn.{i}.{p}" for i in (0, 2) for p in linear]
    return top + [f"blocks.{n}.{name}" for n in range(blocks) for name in block]


def to_diffusers(original: str) -> str:
    """An original-layout weight's name in WanTransformer3DModel, by diffusers' own single-file converter."""
    return next(iter(convert_wan_transformer_to_diffusers({original: torch.empty(0)})))


def comfyui_patches(lora: dict[str, torch.Tensor], model_keys: list[str]) -> tuple[dict[str, tuple], set[str]]:
    """ComfyUI's Load LoRA for a Wan model, reduced to what these files use (comfy/lora.py):
    `model_lora_keys_unet` maps each `diffusion_model.X.weight` of the model from the LoRA key `diffusion_model.X`
    ("generic lora format without any weird key names"); `load_lora` then reads X.lora_up.weight,
    X.lora_down.weight and X.alpha, and warns "lora key not loaded" for every key it did not read.
    Returns (model weight -> (up, down, alpha), the keys not loaded)."""
    key_map = {k.removesuffix(".weight"): k for k in model_keys if k.startswith("diffusion_model.") and k.endswith(".weight")}
    patches, loaded = {}, set()
    for x, weight in key_map.items():
        up, down, alpha = f"{x}.lora_up.weight", f"{x}.lora_down.weight", f"{x}.alpha"
        if up in lora:
            patches[weight] = (lora[up], lora[down], lora[alpha].item() if alpha in lora else None)
            loaded |= {up, down} | ({alpha} if alpha in lora else set())
    return patches, set(lora) - loaded


@pytest.mark.parametrize("merge", [False, True])
def test_comfyui_maps_every_comfy_key_onto_the_original_wan_weights(exports, merge, trained_deltas):
    transformer = load_transformer(load_config("wan-tiny").model)
    weights = transformer.state_dict()
    layout = original_wan_layout(tiny.TRANSFORMER["num_layers"])
    assert sorted(map(to_diffusers, layout)) == sorted(weights)  # the layout is the tiny model's, name for name
    model = {f"diffusion_model.{k}": weights[to_diffusers(k)] for k in layout}  # ComfyUI's model state dict
    deltas: dict[str, torch.Tensor] = {}
    for path in exports["comfy", merge].files:
        patches, not_loaded = comfyui_patches(load_file(str(path)), list(model))
        assert not_loaded == set() and patches
        for weight, (up, down, alpha) in patches.items():
            update = alpha / down.shape[0] * up @ down  # comfy/lora.py calculate_weight: alpha / rank * (up @ down)
            assert update.shape == model[weight].shape
            module = to_diffusers(weight.removeprefix("diffusion_model.")).removesuffix(".weight")
            deltas[module] = deltas.get(module, 0) + update
    assert_same_deltas(deltas, trained_deltas)


def test_comfy_alpha_is_each_layers_own(exports):
    dpo_file, motion_file = exports["comfy", False].files
    for path, alpha in ((dpo_file, 32.0), (motion_file, 16.0)):
        alphas = [v for k, v in load_file(str(path)).items() if k.endswith(".alpha")]
        assert alphas and all(a.ndim == 0 and a.item() == alpha for a in alphas)
    merged = load_file(str(exports["comfy", True].files[0]))
    assert merged["diffusion_model.blocks.0.self_attn.q.alpha"].item() == 32  # both adapters: rank 16 + 16, scales baked
    assert merged["diffusion_model.blocks.0.ffn.0.alpha"].item() == 16  # the motion adapter alone


# metadata, card, errors ----------------------------------------------------------------------------
def test_every_file_has_wan_metadata(exports, category):
    for fmt, merge, path, meta in exported_files(exports):
        assert meta["modelspec.architecture"] == "wan2.1/lora"  # as kohya's musubi-tuner writes Wan LoRAs
        assert meta["modelspec.implementation"] == ("diffusers" if fmt == "diffusers" else "https://github.com/Wan-Video/Wan2.1")
        assert meta["modelspec.resolution"] == "64x64" and meta["huvi.frames"] == "9"
        assert (meta["huvi.prompt"], meta["huvi.category"], meta["huvi.pairs"]) == (PROMPT, category.name, "9")
        assert (meta["huvi.dpo.rank"], meta["huvi.dpo.alpha"], meta["huvi.motion.alpha"]) == ("16", "32", "16")
        assert meta["huvi.base_model"] == "huvi tiny random Wan transformer (huvi.families.wan.tiny)"
        if fmt == "diffusers":  # peft keys under the pipeline's transformer, rank and alpha in diffusers' LoraConfig
            assert all(k.startswith("transformer.blocks.") for k in load_file(str(path)))
            config = json.loads(meta["lora_adapter_metadata"])
            # merged: scale 1, the commonest rank 16 (cross-attention and FFN hold the motion adapter alone)
            expected = {"dpo": (16, 32), "motion": (16, 16), "motion+dpo": (16, 16)}[meta["huvi.adapters"]]
            assert (config["transformer.r"], config["transformer.lora_alpha"]) == expected
            if merge:  # the self-attention layers hold both adapters
                assert config["transformer.rank_pattern"]["^blocks.0.attn1.to_q"] == 32
        assert meta["huvi.adapters"] in (("motion+dpo",) if merge else ("dpo", "motion"))


def test_the_model_card_says_how_to_load_it(exports):
    for (fmt, merge), result in exports.items():
        card = result.card.read_text()
        assert all(f"`{path.name}`" in card for path in result.files)
        assert "WanPipeline(" in card and "load_lora_weights" in card and PROMPT in card
        assert "rank 16, alpha 32" in card and "tags:\n- lora\n- wan" in card
        assert ("LoraLoaderModelOnly" in card) == (fmt == "comfy")
        assert ("each layer's `.alpha` / rank is its scale" in card) == (fmt == "comfy")


def test_the_card_of_a_pretrained_wan22_run_loads_the_hub_model(exports):
    meta = exports["comfy", False].metadata | {
        "huvi.model_source": "pretrained", "huvi.base_model": HUB_IDS["2.2"], "huvi.wan_version": "2.2",
    }
    card = render_card("comfy", {"x.safetensors": "dpo", "x.motion.safetensors": "motion"}, meta, "", "")
    assert f"base_model: {HUB_IDS['2.2']}\n" in card
    assert f'pipe = WanPipeline.from_pretrained("{HUB_IDS["2.2"]}", torch_dtype=torch.bfloat16)' in card
    assert f"Load the Wan 2.2 model with **Load Diffusion Model** ({HUB_IDS['2.2']} in ComfyUI's single-file layout)" in card
    assert "`WanImageToVideoPipeline` given an image holds latent frame 0" in card


def test_wan_version_and_hub_id_of_a_base_model(tmp_path):
    assert wan_version("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == "2.1"
    assert wan_version("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == "2.2"
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert wan_version(str(folder)) == "2.1"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "expand_timesteps": True}))
    assert wan_version(str(folder)) == "2.2"
    model = load_config("wan22-5b").model
    meta = export_metadata(model, "comfy", "dpo", False, "guitar", "a guitar")
    assert (meta["modelspec.architecture"], meta["huvi.base_model"], meta["huvi.base_model_folder"]) == ("wan2.2/lora", model.base, "")
    model.base = str(folder)  # a folder that names no Hub model stands for its version's Hub id, and is named
    meta = export_metadata(model, "comfy", "dpo", False, "guitar", "a guitar")
    assert (meta["huvi.base_model"], meta["huvi.base_model_folder"]) == (HUB_IDS["2.2"], str(folder.resolve()))


def test_the_wan_formats_are_the_runs_and_others_are_refused(run_dir, tmp_path):
    from ui.exporting import ExportHandlers  # imports gradio

    assert run_formats(run_dir) == ("diffusers", "comfy")
    with pytest.raises(HuviError) as err:
        export_run(run_dir, "kohya", tmp_path / "x.safetensors")
    assert str(err.value) == "The wan model family has no export format 'kohya'; choose one of: diffusers, comfy."
    runs = tmp_path / "runs"
    shutil.copytree(run_dir, runs / "wan-run")
    handlers = ExportHandlers(Workspace(tmp_path / "data", runs), None, PresetChoice("wan-tiny", ""))
    radio = handlers.formats("wan-run", "kohya")  # the app's Format choices follow the picked run
    assert (radio.choices, radio.value) == ([("diffusers", "diffusers"), ("comfy", "comfy")], "diffusers")
