"""The model card (README.md) written beside an exported SD1.5 + AnimateDiff LoRA.

`render_card` turns the metadata an export wrote into its file (`huvi.*`, `modelspec.*`) into
Markdown: what the LoRA is, how it was trained, what each file holds, how to load it in diffusers
and ComfyUI, and what the format leaves out (the parts every family's card shares are in huvi.card).
"""

from __future__ import annotations

from huvi.card import assemble, diffusers_code, files_list, leaves_out, training_table, with_folder

_TAGS = ("lora", "animatediff", "text-to-video", "diffusion-dpo", "huvi")
_KOHYA_IN_DIFFUSERS = (
    "\ndiffusers converts the `lora_unet_` keys itself; it cannot place temporal layers from them (see below), "
    "so prefer the diffusers export there.\n"
)


def _training(meta: dict[str, str]) -> str:
    model_rows = [
        ("Base model", with_folder(meta, "base_model")),
        ("Motion adapter", with_folder(meta, "motion_adapter")),
        ("Video size", f"{meta['modelspec.resolution']}, {meta['huvi.frames']} frames"),
        ("Spatial self-attention", meta["huvi.attention"]),
    ]
    return training_table(meta, model_rows, f"{meta['huvi.beta']} (Diffusion-DPO paper form: -0.5 * beta * ...)")


def _pipeline_lines(meta: dict[str, str]) -> list[str]:
    if meta["huvi.model_source"] == "tiny":
        return [
            "from diffusers import AnimateDiffPipeline",
            "from huvi.families.sd15.models import load_encoders, load_scheduler, load_unet",
            "from huvi.config import load_config",
            "",
            'model = load_config("tiny").model  # tiny random weights built in code (huvi.families.sd15.tiny)',
            "enc = load_encoders(model)",
            "pipe = AnimateDiffPipeline(vae=enc.vae, text_encoder=enc.text_encoder, tokenizer=enc.tokenizer,",
            "                           unet=load_unet(model), motion_adapter=None, scheduler=load_scheduler(model))",
        ]
    lines = [
        "import torch",
        "from diffusers import AnimateDiffPipeline, MotionAdapter",
        "",
        f'adapter = MotionAdapter.from_pretrained("{meta["huvi.motion_adapter"]}", torch_dtype=torch.float16)',
        f'pipe = AnimateDiffPipeline.from_pretrained("{meta["huvi.base_model"]}", motion_adapter=adapter, torch_dtype=torch.float16).to("cuda")',
    ]
    if meta["huvi.attention"] == "sparse_causal":
        lines += [
            "# the run used huvi's sparse-causal spatial attention; install it for the same outputs",
            "from huvi.families.sd15.attention import set_spatial_attention",
            'set_spatial_attention(pipe.unet, "sparse_causal")',
        ]
    return lines


def _comfy_usage(fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
    names = ", ".join(f"`{name}`" for name in files)
    motion = meta["huvi.motion_adapter"]
    if fmt == "kohya":
        return (
            f"Copy {names} to `ComfyUI/models/loras/`. Load the SD1.5 checkpoint, add a **Load LoRA** node per file "
            "(model strength 1.0 for the motion or merged file, your DPO strength for the DPO file; clip strength 0: "
            "no text-encoder layers are trained), then AnimateDiff-Evolved's loader with the original AnimateDiff "
            f"checkpoint of {motion} (e.g. `mm_sd_v15_v2.ckpt` for guoyww/animatediff-motion-adapter-v1-5-2). "
            "Add the comfy-motion export for the temporal layers."
        )
    if fmt == "comfy-motion":
        return (
            f"Copy {names} to `ComfyUI/models/animatediff_motion_lora/` (or "
            "`custom_nodes/ComfyUI-AnimateDiff-Evolved/motion_lora/`). Chain one **Load AnimateDiff LoRA** node per "
            "file (strength 1.0 for the motion or merged file, your DPO strength for the DPO file) into the "
            "`motion_lora` input of the AnimateDiff loader, whose motion model is the original AnimateDiff checkpoint "
            f"of {motion}. Add the kohya export through **Load LoRA** for the spatial layers."
        )
    return "Use the kohya export (SD1.5 layers) together with the comfy-motion export (temporal layers) in ComfyUI."


def render_card(fmt: str, files: dict[str, str], meta: dict[str, str], left_out: str, reason: str) -> str:
    """Markdown for README.md. files: file name -> the adapters it holds ("dpo", "motion" or "motion+dpo");
    meta: the metadata of the export's main file; left_out/reason: what the format cannot hold, and why."""
    intro = (
        f"A LoRA for AnimateDiff ({meta['huvi.base_model']} + motion adapter {meta['huvi.motion_adapter']}) "
        "trained with huvi in two stages: a motion LoRA on the category's few clips, then a Diffusion-DPO LoRA "
        "on preference pairs formed from people's 1-5 ratings of those clips (the frozen reference is the "
        "motion-LoRA model)."
    )
    if fmt == "comfy-motion":
        diffusers = "Use the diffusers export for diffusers; this layout is ComfyUI-AnimateDiff-Evolved's."
    else:
        note = _KOHYA_IN_DIFFUSERS if fmt == "kohya" else ""
        diffusers = diffusers_code(_pipeline_lines(meta), files, meta) + note
    leaves = leaves_out(left_out, reason) + (
        "\n\nNo export holds huvi's first-frame conditioning: huvi trains and generates (`python -m huvi generate`) "
        "with frame 0 given as the clean latent of an image, while a plain AnimateDiff pipeline denoises every "
        "frame from noise, so its videos differ from huvi's even with the same weights."
    )
    files_md = files_list(fmt, files, meta, alpha_per_layer=fmt == "kohya")
    return assemble(meta, _TAGS, intro, _training(meta), files_md, diffusers, _comfy_usage(fmt, files, meta), leaves)
