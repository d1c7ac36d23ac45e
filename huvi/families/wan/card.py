"""The model card (README.md) written beside an exported Wan LoRA.

`render_card` turns the metadata an export wrote into its file (`huvi.*`, `modelspec.*`) into
Markdown: what the LoRA is, how it was trained, what each file holds, how to load it with
`WanPipeline.load_lora_weights` and with ComfyUI's LoraLoaderModelOnly, and what the format leaves
out (the parts every family's card shares are in huvi.card).
"""

from __future__ import annotations

from huvi.card import assemble, diffusers_code, files_list, leaves_out, training_table, with_folder

_TAGS = ("lora", "wan", "text-to-video", "diffusion-dpo", "flow-dpo", "huvi")


def _training(meta: dict[str, str]) -> str:
    model_rows = [
        ("Base model", with_folder(meta, "base_model")),
        ("Video size", f"{meta['modelspec.resolution']}, {meta['huvi.frames']} frames"),
        ("Attention", "Wan's own full spatio-temporal self-attention"),
    ]
    return training_table(meta, model_rows, f"{meta['huvi.beta']} (Diffusion-DPO form, -0.5 * beta * ..., on flow-matching velocity errors)")


def _pipeline_lines(meta: dict[str, str]) -> list[str]:
    if meta["huvi.model_source"] == "tiny":
        return [
            "from diffusers import WanPipeline",
            "from huvi.config import load_config",
            "from huvi.families.wan.models import load_encoders, load_scheduler, load_transformer",
            "",
            'model = load_config("wan-tiny").model  # tiny random weights built in code (huvi.families.wan.tiny)',
            "enc = load_encoders(model)",
            "pipe = WanPipeline(tokenizer=enc.tokenizer, text_encoder=enc.text_encoder, vae=enc.vae,",
            "                   transformer=load_transformer(model), scheduler=load_scheduler(model))",
        ]
    return [
        "import torch",
        "from diffusers import WanPipeline",
        "",
        f'pipe = WanPipeline.from_pretrained("{meta["huvi.base_model"]}", torch_dtype=torch.bfloat16).to("cuda")',
    ]


def _comfy_usage(fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
    if fmt != "comfy":
        return "Use the comfy export in ComfyUI: its keys are the original Wan names that ComfyUI's Load LoRA maps."
    names = ", ".join(f"`{name}`" for name in files)
    if meta["huvi.model_source"] == "tiny":
        model = "(a tiny run's random transformer has no ComfyUI checkpoint; a real run's files load this way)"
    else:
        model = f"({meta['huvi.base_model']} in ComfyUI's single-file layout)"
    return (
        f"Copy {names} to `ComfyUI/models/loras/`. Load the Wan {meta['huvi.wan_version']} model with **Load Diffusion "
        f"Model** {model}, then chain one **LoraLoaderModelOnly** node per file (strength 1.0 for the motion or "
        "merged file, your DPO strength for the DPO file): only transformer layers are trained, so the text encoder "
        "takes no LoRA."
    )


def _first_frame(meta: dict[str, str]) -> str:
    text = (
        "No export holds huvi's first-frame conditioning: huvi trains and generates (`python -m huvi generate`) with "
        "latent frame 0 held at the clean latent of an image, while WanPipeline denoises every frame from noise, so "
        "its videos differ from huvi's even with the same weights."
    )
    if meta["huvi.wan_version"] == "2.2":
        text += (
            " With Wan 2.2 TI2V-5B, diffusers' `WanImageToVideoPipeline` given an image holds latent frame 0 at that "
            "image's latent at every step, as huvi does, and loads these files the same way."
        )
    return text


def render_card(fmt: str, files: dict[str, str], meta: dict[str, str], left_out: str, reason: str) -> str:
    """Markdown for README.md. files: file name -> the adapters it holds ("dpo", "motion" or "motion+dpo");
    meta: the metadata of the export's main file; left_out/reason: what the format cannot hold, and why."""
    intro = (
        f"A LoRA for Wan {meta['huvi.wan_version']} ({meta['huvi.base_model']}) trained with huvi in two stages: a motion "
        "LoRA on the category's few clips (flow matching), then a Flow-DPO LoRA (the Diffusion-DPO loss on velocity "
        "errors) on preference pairs formed from people's 1-5 ratings of those clips (the frozen reference is the "
        "motion-LoRA model)."
    )
    note = "\ndiffusers converts the `diffusion_model.` keys of this layout itself, each layer's alpha included.\n" if fmt == "comfy" else ""
    diffusers = diffusers_code(_pipeline_lines(meta), files, meta) + note
    leaves = leaves_out(left_out, reason) + "\n\n" + _first_frame(meta)
    files_md = files_list(fmt, files, meta, alpha_per_layer=fmt == "comfy")
    return assemble(meta, _TAGS, intro, _training(meta), files_md, diffusers, _comfy_usage(fmt, files, meta), leaves)
