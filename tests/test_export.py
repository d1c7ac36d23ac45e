"""LoRA export on the tiny preset: diffusers, kohya and comfy-motion files load elsewhere and match the run."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable

import pytest
import torch
from diffusers import AnimateDiffPipeline
from diffusers.loaders.lora_conversion_utils import (
    _convert_non_diffusers_lora_to_diffusers,
    _convert_unet_lora_key,
)
from helpers import export_every_format, exported_files, rewrite_adapter, run_to_export
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from huvi.adapters import DPO, MOTION, load_adapter, set_active
from huvi.config import load_config
from huvi.errors import HuviError
from huvi.export import export_run
from huvi.families.sd15 import tiny
from huvi.families.sd15.card import render_card
from huvi.families.sd15.export import kohya_name
from huvi.families.sd15.models import load_encoders, load_scheduler, load_unet
from huvi.families.sd15.targets import ALL_ATTENTION
from huvi.runs import Run

PROMPT = "a square moving right"
ATOL = 1e-5
# original AnimateDiff MotionLoRA keys (what ComfyUI-AnimateDiff-Evolved and guoyww's motion LoRAs use)
ORIGINAL_MOTION_KEY = re.compile(
    r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+\.temporal_transformer\.transformer_blocks\.\d+"
    r"\.attention_blocks\.[01]\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight"
)


# a small run, its model, and pipelines built the way a diffusers user would ---------------------
def module_of(key: str) -> str:
    return key.removeprefix("unet.").rsplit(".lora_", 1)[0]  # ...attn1.to_q.lora_A.weight -> ...attn1.to_q


def temporal_attention(module: str) -> bool:
    return ".motion_modules." in module and re.search(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$", module) is not None


def spatial(module: str) -> bool:
    return ".motion_modules." not in module


@pytest.fixture(scope="module")
def run_dir(category, tmp_path_factory):
    """One tiny step per stage (the up weights are perturbed afterwards, so more steps would add only time);
    the DPO adapter on every attention, spatial and temporal, so each format holds part of both adapters and
    merged layers overlap; run.json as the trainer will write it."""
    cfg = load_config("tiny", {"motion": {"steps": 1}, "dpo": {"steps": 1, "adapter": {"targets": ALL_ATTENTION}}})
    return run_to_export(cfg, category, tmp_path_factory.mktemp("export") / "run", PROMPT, noise=0.02)


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory):
    """(format, merge) -> ExportResult, each in its own folder."""
    return export_every_format(run_dir, tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def unet_input():
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 16, 16, generator=g)  # (b, c, f, h, w)
    text = torch.randn(8, 77, tiny.TEXT_DIM, generator=g)  # (b f, tokens, dim): one per frame
    return sample, torch.tensor([500]), text


def predict(unet, unet_input) -> torch.Tensor:
    sample, timestep, text = unet_input
    with torch.no_grad():
        return unet(sample, timestep, encoder_hidden_states=text).sample


def run_model(run_dir, attention: str = "sparse_causal"):
    """The run's model: its UNet with both adapters active at scale 1."""
    cfg = Run(run_dir).read_config()
    cfg.model.attention = attention
    unet = load_unet(cfg.model)
    for name in (MOTION, DPO):
        load_adapter(unet, Run(run_dir).adapter_path(name), name)
    set_active(unet, [MOTION, DPO], trainable=None)
    return unet.eval()  # load_adapter adds the DPO LoRA's dropout in training mode


@pytest.fixture(scope="module")
def run_output(run_dir, unet_input):
    return predict(run_model(run_dir), unet_input)


def run_part_output(run_dir, tmp_path, unet_input, keep: Callable[[str], bool]) -> torch.Tensor:
    """The run's model with only the layers `keep` accepts (the others' lora_B zeroed), built without the exporter."""
    copy = tmp_path / "part"
    shutil.copytree(run_dir, copy)
    for name in (MOTION, DPO):
        rewrite_adapter(Run(copy).adapter_path(name), lambda k, v: v if keep(module_of(k)) or "lora_A" in k else torch.zeros_like(v))
    return predict(run_model(copy), unet_input)


def huvi_pipeline() -> AnimateDiffPipeline:
    """A fresh tiny AnimateDiffPipeline from huvi's components (its UNet has huvi's sparse-causal attention)."""
    model = load_config("tiny").model
    enc = load_encoders(model)
    return AnimateDiffPipeline(
        vae=enc.vae, text_encoder=enc.text_encoder, tokenizer=enc.tokenizer,
        unet=load_unet(model), motion_adapter=None, scheduler=load_scheduler(model),
    )


def plain_pipeline() -> AnimateDiffPipeline:
    """What a diffusers user builds: an SD UNet plus a MotionAdapter, diffusers' own attention everywhere."""
    parts = tiny.build_components()
    return AnimateDiffPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        unet=parts["unet2d"], motion_adapter=parts["motion_adapter"], scheduler=parts["scheduler"],
    )


def load_export(pipe: AnimateDiffPipeline, result) -> AnimateDiffPipeline:
    """Load an export the way its model card says: one adapter if merged, else motion + dpo at 1.0."""
    if len(result.files) == 1:
        pipe.load_lora_weights(str(result.files[0]), adapter_name="huvi")
    else:
        dpo_file, motion_file = result.files
        pipe.load_lora_weights(str(motion_file), adapter_name="motion")
        pipe.load_lora_weights(str(dpo_file), adapter_name="dpo")
        pipe.set_adapters(["motion", "dpo"], [1.0, 1.0])
    return pipe


def lora_layers(unet, adapter: str) -> dict[str, BaseTunerLayer]:
    return {name: m for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer) and adapter in m.lora_A}


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert torch.allclose(got, want, rtol=0, atol=ATOL), f"max difference {(got - want).abs().max().item():.3g}"


# diffusers -----------------------------------------------------------------------------------------
def test_the_round_trip_is_meaningful(run_dir, run_output, unet_input):
    """Both adapters change the output far beyond the tolerance, and so would a DPO scale of 1 instead of 2."""
    unet = run_model(run_dir)
    base = predict(load_unet(load_config("tiny").model), unet_input)
    unet.set_adapters([MOTION, DPO], [1.0, 0.0])
    motion_only = predict(unet, unet_input)
    unet.set_adapters([MOTION, DPO], [1.0, 0.5])  # what alpha = rank (scale 1 instead of 2) would give
    half_dpo = predict(unet, unet_input)
    for other in (base, motion_only, half_dpo):
        assert (other - run_output).abs().max() > 100 * ATOL


@pytest.mark.parametrize("merge", [False, True])
def test_diffusers_export_reproduces_the_run(exports, merge, run_output, unet_input):
    pipe = load_export(huvi_pipeline(), exports["diffusers", merge])
    assert_same(predict(pipe.unet, unet_input), run_output)


def test_diffusers_export_in_a_plain_diffusers_pipeline(run_dir, exports, unet_input):
    """No huvi code on the loading side: equal to the run's model with diffusers' own attention."""
    pipe = load_export(plain_pipeline(), exports["diffusers", False])
    assert_same(predict(pipe.unet, unet_input), predict(run_model(run_dir, attention="full"), unet_input))
    config = pipe.unet.peft_config
    assert (config["dpo"].r, config["dpo"].lora_alpha) == (16, 32)  # rank and alpha round-trip
    assert (config["motion"].r, config["motion"].lora_alpha) == (32, 32)
    layer = next(iter(lora_layers(pipe.unet, "dpo").values()))
    assert layer.scaling["dpo"] == 2.0


def test_diffusers_keys_and_config(run_dir, exports):
    dpo_file = exports["diffusers", False].files[0]
    tensors = load_file(str(dpo_file))
    stored = load_file(str(Run(run_dir).adapter_path(DPO)))
    assert tensors.keys() == {f"unet.{k}" for k in stored}  # peft keys with the unet. prefix
    assert all(torch.equal(tensors[f"unet.{k}"], v) for k, v in stored.items())
    config = json.loads(exports["diffusers", False].metadata["lora_adapter_metadata"])
    assert (config["unet.r"], config["unet.lora_alpha"]) == (16, 32)
    merged = json.loads(exports["diffusers", True].metadata["lora_adapter_metadata"])
    assert merged["unet.rank_pattern"], "merged layers have different ranks (32, 16 or 48)"
    assert merged["unet.lora_alpha"] == merged["unet.r"] and merged["unet.alpha_pattern"] == merged["unet.rank_pattern"]  # scale 1


# kohya ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("merge", [False, True])
def test_kohya_export_loads_through_diffusers_conversion(run_dir, exports, merge, unet_input, tmp_path):
    result = exports["kohya", merge]
    for path in result.files:
        tensors = load_file(str(path))
        assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in tensors)
        converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(tensors))  # raises on any leftover key
        assert len(converted) + len(alphas) == len(tensors)
    pipe = load_export(huvi_pipeline(), result)
    # every layer in the files became a LoRA layer of the UNet, with the file's weights: nothing dropped
    for path, adapter in zip(result.files, ["huvi"] if merge else ["dpo", "motion"]):
        tensors = load_file(str(path))
        layers = lora_layers(pipe.unet, adapter)
        assert {kohya_name(name) for name in layers} == {k.split(".")[0] for k in tensors}
        for name, layer in layers.items():
            key = kohya_name(name)
            assert torch.equal(layer.lora_A[adapter].weight, tensors[f"{key}.lora_down.weight"])
            assert torch.equal(layer.lora_B[adapter].weight, tensors[f"{key}.lora_up.weight"])
            assert layer.scaling[adapter] == tensors[f"{key}.alpha"].item() / layer.r[adapter]
    # and it is the run without its motion-module layers, which kohya naming cannot carry
    assert_same(predict(pipe.unet, unet_input), run_part_output(run_dir, tmp_path, unet_input, spatial))


def test_kohya_alpha_is_the_adapter_alpha(exports):
    dpo_file, motion_file = exports["kohya", False].files
    for path, rank, alpha in ((dpo_file, 16, 32.0), (motion_file, 32, 32.0)):
        tensors = load_file(str(path))
        alphas = [v for k, v in tensors.items() if k.endswith(".alpha")]
        assert alphas and all(a.ndim == 0 and a.item() == alpha for a in alphas)
        assert all(v.shape[0] == rank for k, v in tensors.items() if k.endswith(".lora_down.weight"))
    assert exports["kohya", False].metadata["ss_network_dim"] == "16"
    assert exports["kohya", False].metadata["ss_network_alpha"] == "32"
    assert exports["kohya", True].metadata["ss_network_dim"] == "Dynamic"


def test_diffusers_cannot_map_kohya_motion_module_names():
    """Why kohya exports leave the temporal layers out (see huvi.export): revisit if this ever fails."""
    key = "lora_unet_down_blocks_0_motion_modules_0_transformer_blocks_0_attn1_to_q.lora_down.weight"
    assert "motion.modules" in _convert_unet_lora_key(key)
    spatial = "lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"
    assert _convert_unet_lora_key(spatial) == "down_blocks.0.resnets.0.time_emb_proj.lora.down.weight"


# comfy-motion --------------------------------------------------------------------------------------
@pytest.mark.parametrize("merge", [False, True])
def test_comfy_motion_keys_use_the_original_naming(run_dir, exports, merge):
    result = exports["comfy-motion", merge]
    for path in result.files:
        keys = list(load_file(str(path)))
        assert keys and all("temporal" in k and ORIGINAL_MOTION_KEY.fullmatch(k) for k in keys)
        # ComfyUI-AnimateDiff-Evolved's own key -> motion-module weight mapping
        targets = {k.replace("processor.", "").replace("_lora", "").replace("down.", "").replace("up.", "").replace("to_out.", "to_out.0.") for k in keys}
        assert all(re.fullmatch(r".*\.attention_blocks\.[01]\.(to_q|to_k|to_v|to_out\.0)\.weight", t) for t in targets)
    modules = {module_of(k) for k in load_file(str(Run(run_dir).adapter_path(DPO))) if temporal_attention(module_of(k))}
    assert len(load_file(str(result.files[0]))) == 2 * len(modules) and modules


def test_comfy_motion_has_the_scale_baked_in(run_dir, exports):
    dpo_file, motion_file = exports["comfy-motion", False].files
    for path, name, scale in ((dpo_file, DPO, 32 / 16), (motion_file, MOTION, 32 / 32)):
        tensors, stored = load_file(str(path)), load_file(str(Run(run_dir).adapter_path(name)))
        module = "up_blocks.1.motion_modules.0.transformer_blocks.0.attn1.to_out.0"
        original = "up_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_out_lora"
        delta = tensors[f"{original}.up.weight"] @ tensors[f"{original}.down.weight"]  # (out, in)
        peft_delta = stored[f"{module}.lora_B.weight"] @ stored[f"{module}.lora_A.weight"]
        torch.testing.assert_close(delta, scale * peft_delta, rtol=1e-6, atol=1e-7)
        assert not any(k.endswith(".alpha") for k in tensors)


def test_comfy_motion_matches_the_run_through_diffusers_conversion(run_dir, exports, unet_input, tmp_path):
    """diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py mapping, then load_lora_weights."""
    tensors = load_file(str(exports["comfy-motion", True].files[0]))
    converted = {
        "unet." + k.replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2").replace(".temporal_transformer", ""): v
        for k, v in tensors.items()
    }
    pipe = huvi_pipeline()
    pipe.load_lora_weights(converted, adapter_name="motion_lora")
    assert_same(predict(pipe.unet, unet_input), run_part_output(run_dir, tmp_path, unet_input, temporal_attention))


# metadata and card ---------------------------------------------------------------------------------
def test_every_file_has_string_metadata_with_rank_and_alpha(exports, category):
    for fmt, _, _, meta in exported_files(exports):
        for key in ("modelspec.sai_model_spec", "modelspec.title", "modelspec.architecture", "modelspec.resolution",
                    "modelspec.trigger_phrase", "huvi.rank", "huvi.alpha", "huvi.steps", "huvi.beta", "huvi.version"):
            assert meta[key], key
        assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
        assert meta["modelspec.resolution"] == "32x32"
        assert (meta["huvi.prompt"], meta["huvi.category"], meta["huvi.pairs"]) == (PROMPT, category.name, "9")
        assert (meta["huvi.dpo.rank"], meta["huvi.dpo.alpha"], meta["huvi.motion.rank"]) == ("16", "32", "32")
        assert ("ss_network_dim" in meta) == (fmt == "kohya")
    for (_, merge), result in exports.items():
        assert result.metadata["huvi.rank"] == ("32+16" if merge else "16")
        assert result.metadata["huvi.alpha"] == ("32+32" if merge else "32")
        assert result.metadata["huvi.steps"] == ("1+1" if merge else "1")


def test_the_model_card_describes_the_export(exports):
    for (fmt, merge), result in exports.items():
        assert result.card == result.files[0].parent / "README.md"
        card = result.card.read_text()
        assert PROMPT in card and "rank 16, alpha 32" in card
        assert all(f"`{path.name}`" in card for path in result.files)
        assert ("load_lora_weights" in card) == (fmt != "comfy-motion")
        assert ("leaves out the temporal" in card) == (fmt == "kohya")
        assert ("Load AnimateDiff LoRA" in card) == (fmt == "comfy-motion")


def test_a_run_without_run_json_still_exports(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "run.json").unlink()
    meta = export_run(copy, "diffusers", tmp_path / "out" / "x.safetensors").metadata
    state = json.loads(next((copy / "checkpoints").glob("dpo-*/state.json")).read_text())
    assert (meta["huvi.prompt"], meta["huvi.category"]) == ("", "")
    assert meta["huvi.pairs"] == str(len(state["pairs"]))


# errors ----------------------------------------------------------------------------------------------
def assert_one_sentence(err: pytest.ExceptionInfo, fragment: str) -> None:
    message = str(err.value)
    assert fragment in message and "\n" not in message and message.endswith(".")


def test_bad_requests_raise_one_sentence(run_dir, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(HuviError) as err:
        export_run(tmp_path / "nowhere", "diffusers", out)
    assert_one_sentence(err, "is not a huvi run")
    with pytest.raises(HuviError) as err:
        export_run(run_dir, "onnx", out)
    assert_one_sentence(err, "choose one of: diffusers, kohya, comfy-motion")
    with pytest.raises(HuviError) as err:
        export_run(run_dir, "comfy", out)  # another family's format
    assert_one_sentence(err, "The sd15 model family has no export format 'comfy'; choose one of: diffusers, kohya, comfy-motion")
    with pytest.raises(HuviError) as err:
        export_run(run_dir, "kohya", tmp_path / "x.pt")
    assert_one_sentence(err, "must end in .safetensors")
    assert not any(tmp_path.iterdir())


def test_missing_or_unexportable_adapters_raise_one_sentence(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    rewrite_adapter(Run(copy).adapter_path(DPO), lambda k, v: None if spatial(module_of(k)) else v)  # as the tiny preset trains it
    with pytest.raises(HuviError) as err:
        export_run(copy, "kohya", tmp_path / "out" / "x.safetensors")
    assert_one_sentence(err, "only layers the kohya format leaves out")
    assert export_run(copy, "kohya", tmp_path / "out" / "x.safetensors", merge=True).files  # the motion part is still there
    Run(copy).adapter_path(DPO).unlink()
    with pytest.raises(HuviError) as err:
        export_run(copy, "diffusers", tmp_path / "out2" / "x.safetensors")
    assert_one_sentence(err, "has no dpo adapter")
    assert not (tmp_path / "out2").exists()


def test_the_card_of_a_pretrained_run_loads_the_hub_models(exports):
    meta = exports["diffusers", False].metadata | {
        "huvi.model_source": "pretrained",
        "huvi.base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "huvi.motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2",
    }
    card = render_card("diffusers", {"x.safetensors": "dpo", "x.motion.safetensors": "motion"}, meta, "", "")
    assert "base_model: stable-diffusion-v1-5/stable-diffusion-v1-5" in card
    assert 'MotionAdapter.from_pretrained("guoyww/animatediff-motion-adapter-v1-5-2"' in card
    assert 'AnimateDiffPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5"' in card
    assert 'set_spatial_attention(pipe.unet, "sparse_causal")' in card  # the run's attention, for the same outputs


def test_the_card_names_the_hub_id_and_the_local_folder_it_was_trained_from(trained_run, tmp_path):
    """A run on local folders: `base_model:` must still be a Hub id (a path is not one); the folder is
    named beside it. A folder of the Hugging Face cache names its repository."""
    cache = tmp_path / "hub" / "models--someone--sd15-finetune" / "snapshots" / "0123abcd"
    plain = tmp_path / "my-models" / "animatediff"
    for folder in (cache, plain):
        folder.mkdir(parents=True)
    run = tmp_path / "run"
    shutil.copytree(trained_run.root, run)
    cfg = Run(run).read_config()
    cfg.model.source, cfg.model.base, cfg.model.motion_adapter = "pretrained", str(cache), str(plain)
    Run(run).write_config(cfg)

    result = export_run(run, "diffusers", tmp_path / "out" / "x.safetensors")
    card = result.card.read_text()
    assert result.metadata["huvi.base_model"] == "someone/sd15-finetune" and result.metadata["huvi.base_model_folder"] == str(cache)
    assert result.metadata["huvi.motion_adapter"] == "guoyww/animatediff-motion-adapter-v1-5-2"  # the architecture's Hub id
    assert result.metadata["huvi.motion_adapter_folder"] == str(plain)
    assert "base_model: someone/sd15-finetune\n" in card and str(tmp_path) not in card.split("---")[1]  # front matter: Hub ids only
    assert f"someone/sd15-finetune (trained from the local folder `{cache}`)" in card
    assert f"guoyww/animatediff-motion-adapter-v1-5-2 (trained from the local folder `{plain}`)" in card
