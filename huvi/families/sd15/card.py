"""The model card (README.md) written beside an exported SD1.5 + AnimateDiff LoRA.

`render_card` turns the metadata an export wrote into its file (`huvi.*`, `modelspec.*`) into
Markdown: what the LoRA is, how it was trained, what each file holds, how to load it in diffusers
and ComfyUI, and what the format leaves out. The metadata is the single source, so the card and the
file never disagree.
"""

from __future__ import annotations

_TAGS = ("lora", "animatediff", "text-to-video", "diffusion-dpo", "huvi")


def _front_matter(meta: dict[str, str]) -> str:
    lines = ["---", "library_name: diffusers", "pipeline_tag: text-to-video", "tags:"] + [f"- {tag}" for tag in _TAGS]
    if meta["huvi.model_source"] == "pretrained":
        lines.append(f"base_model: {meta['huvi.base_model']}")
    return "\n".join(lines + ["---"])


def _with_folder(meta: dict[str, str], key: str) -> str:
    """The Hub id, and the local folder the run loaded instead when it used one."""
    folder = meta.get(f"huvi.{key}_folder", "")
    return f"{meta[f'huvi.{key}']} (trained from the local folder `{folder}`)" if folder else meta[f"huvi.{key}"]


def _training(meta: dict[str, str]) -> str:
    rows = [
        ("Category", meta["huvi.category"] or "(not recorded by this run)"),
        ("Prompt", meta["huvi.prompt"] or "(not recorded by this run)"),
        ("Base model", _with_folder(meta, "base_model")),
        ("Motion adapter", _with_folder(meta, "motion_adapter")),
        ("Video size", f"{meta['modelspec.resolution']}, {meta['huvi.frames']} frames"),
        ("Spatial self-attention", meta["huvi.attention"]),
        ("Motion LoRA", f"rank {meta['huvi.motion.rank']}, alpha {meta['huvi.motion.alpha']}, {meta['huvi.motion.steps']} steps"),
        ("DPO LoRA", f"rank {meta['huvi.dpo.rank']}, alpha {meta['huvi.dpo.alpha']}, {meta['huvi.dpo.steps']} steps"),
        ("DPO beta", f"{meta['huvi.beta']} (Diffusion-DPO paper form: -0.5 * beta * ...)"),
        ("Preference pairs", meta["huvi.pairs"] or "(not recorded)"),
        ("Preset", meta["huvi.preset"]),
        ("huvi version", meta["huvi.version"]),
        ("Trained", meta["modelspec.date"]),
    ]
    return "| Setting | Value |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def _files(fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
    what = {
        "dpo": "the DPO adapter",
        "motion": "the motion adapter",
        "motion+dpo": "the motion and DPO adapters merged into their exact sum",
    }
    if fmt == "kohya":
        scale = "each layer's `.alpha` / rank is its scale"
    elif meta["huvi.scale_baked"] == "true":
        scale = "the alpha/rank scale is baked into the up weights"
    else:
        scale = "rank and alpha are in the metadata (scale = alpha / rank)"
    lines = [f"- `{name}`: {what[adapters]}; {fmt} layout, {scale}." for name, adapters in files.items()]
    if len(files) > 1:
        lines.append("\nLoad both, the motion adapter at 1.0; the DPO adapter's weight sets how strongly the preference tuning applies.")
    return "\n".join(lines)


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


def _diffusers_usage(fmt: str, files: dict[str, str], meta: dict[str, str]) -> str:
    lines = _pipeline_lines(meta)
    by_adapters = {adapters: name for name, adapters in files.items()}
    if "motion+dpo" in by_adapters:
        lines.append(f'pipe.load_lora_weights("{by_adapters["motion+dpo"]}", adapter_name="huvi")')
    else:
        lines += [
            f'pipe.load_lora_weights("{by_adapters["motion"]}", adapter_name="motion")',
            f'pipe.load_lora_weights("{by_adapters["dpo"]}", adapter_name="dpo")',
            'pipe.set_adapters(["motion", "dpo"], [1.0, 1.0])  # the second number scales the DPO adapter',
        ]
    width, height = meta["modelspec.resolution"].split("x")
    prompt = meta["huvi.prompt"] or "your prompt"
    lines.append(f'video = pipe("{prompt}", num_frames={meta["huvi.frames"]}, width={width}, height={height}).frames[0]')
    note = ""
    if fmt == "kohya":
        note = "\ndiffusers converts the `lora_unet_` keys itself; it cannot place temporal layers from them (see below), so prefer the diffusers export there.\n"
    return "```python\n" + "\n".join(lines) + "\n```\n" + note


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
    title = meta["huvi.category"] or meta["modelspec.title"]
    intro = (
        f"A LoRA for AnimateDiff ({meta['huvi.base_model']} + motion adapter {meta['huvi.motion_adapter']}) "
        "trained with huvi in two stages: a motion LoRA on the category's few clips, then a Diffusion-DPO LoRA "
        "on preference pairs formed from people's 1-5 ratings of those clips (the frozen reference is the "
        "motion-LoRA model)."
    )
    if fmt == "comfy-motion":
        diffusers = "Use the diffusers export for diffusers; this layout is ComfyUI-AnimateDiff-Evolved's."
    else:
        diffusers = _diffusers_usage(fmt, files, meta)
    leaves = f"This file leaves out {left_out}: {reason}." if left_out else "Nothing: every trained layer is in the file."
    sections = [
        _front_matter(meta),
        f"# huvi: {title}",
        intro,
        "## Training\n\n" + _training(meta),
        "## Files\n\n" + _files(fmt, files, meta),
        "## diffusers\n\n" + diffusers,
        "## ComfyUI\n\n" + _comfy_usage(fmt, files, meta),
        "## What this format leaves out\n\n"
        + leaves
        + "\n\nNo export holds huvi's first-frame conditioning: huvi trains and generates (`python -m huvi generate`) "
        "with frame 0 given as the clean latent of an image, while a plain AnimateDiff pipeline denoises every "
        "frame from noise, so its videos differ from huvi's even with the same weights.",
    ]
    return "\n\n".join(sections) + "\n"
