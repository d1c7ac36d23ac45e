"""The parts of an export's model card (README.md) that every family's card shares: the front matter, the
training table, the list of files and the lines that load them in diffusers. Each family's `render_card`
(huvi.families.*.card) puts them together with what only it can say. The card is written from the
metadata the export wrote into its file (`huvi.*`, `modelspec.*`), so the card and the file never disagree.
"""

from __future__ import annotations

_ADAPTERS = {
    "dpo": "the DPO adapter",
    "motion": "the motion adapter",
    "motion+dpo": "the motion and DPO adapters merged into their exact sum",
}


def front_matter(meta: dict[str, str], tags: tuple[str, ...]) -> str:
    """The Hub's YAML block; `base_model` only for pretrained weights (a tiny run has none)."""
    lines = ["---", "library_name: diffusers", "pipeline_tag: text-to-video", "tags:"] + [f"- {tag}" for tag in tags]
    if meta["huvi.model_source"] == "pretrained":
        lines.append(f"base_model: {meta['huvi.base_model']}")
    return "\n".join(lines + ["---"])


def with_folder(meta: dict[str, str], key: str) -> str:
    """The Hub id, and the local folder the run loaded instead when it used one."""
    folder = meta.get(f"huvi.{key}_folder", "")
    return f"{meta[f'huvi.{key}']} (trained from the local folder `{folder}`)" if folder else meta[f"huvi.{key}"]


def training_table(meta: dict[str, str], model_rows: list[tuple[str, str]], beta: str) -> str:
    """Markdown table of the run's settings: what it learned from, `model_rows` (the family's base model and
    its settings), both adapters, `beta` (the DPO beta and its form) and where the numbers come from."""
    rows = [
        ("Category", meta["huvi.category"] or "(not recorded by this run)"),
        ("Prompt", meta["huvi.prompt"] or "(not recorded by this run)"),
        *model_rows,
        ("Motion LoRA", f"rank {meta['huvi.motion.rank']}, alpha {meta['huvi.motion.alpha']}, {meta['huvi.motion.steps']} steps"),
        ("DPO LoRA", f"rank {meta['huvi.dpo.rank']}, alpha {meta['huvi.dpo.alpha']}, {meta['huvi.dpo.steps']} steps"),
        ("DPO beta", beta),
        ("Preference pairs", meta["huvi.pairs"] or "(not recorded)"),
        ("Preset", meta["huvi.preset"]),
        ("huvi version", meta["huvi.version"]),
        ("Trained", meta["modelspec.date"]),
    ]
    return "| Setting | Value |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)


def files_list(fmt: str, files: dict[str, str], meta: dict[str, str], alpha_per_layer: bool) -> str:
    """A line per file (file name -> the adapters it holds: "dpo", "motion" or "motion+dpo") saying how its
    scale is stored: in an `.alpha` key per layer, baked into the up weights, or in the metadata."""
    if alpha_per_layer:
        scale = "each layer's `.alpha` / rank is its scale"
    elif meta["huvi.scale_baked"] == "true":
        scale = "the alpha/rank scale is baked into the up weights"
    else:
        scale = "rank and alpha are in the metadata (scale = alpha / rank)"
    lines = [f"- `{name}`: {_ADAPTERS[adapters]}; {fmt} layout, {scale}." for name, adapters in files.items()]
    if len(files) > 1:
        lines.append("\nLoad both, the motion adapter at 1.0; the DPO adapter's weight sets how strongly the preference tuning applies.")
    return "\n".join(lines)


def diffusers_code(pipeline_lines: list[str], files: dict[str, str], meta: dict[str, str]) -> str:
    """A Python block: `pipeline_lines` build `pipe`, then the files load into it (one adapter when merged,
    else motion and dpo at 1.0) and it renders the run's prompt at the run's size."""
    by_adapters = {adapters: name for name, adapters in files.items()}
    if "motion+dpo" in by_adapters:
        load = [f'pipe.load_lora_weights("{by_adapters["motion+dpo"]}", adapter_name="huvi")']
    else:
        load = [
            f'pipe.load_lora_weights("{by_adapters["motion"]}", adapter_name="motion")',
            f'pipe.load_lora_weights("{by_adapters["dpo"]}", adapter_name="dpo")',
            'pipe.set_adapters(["motion", "dpo"], [1.0, 1.0])  # the second number scales the DPO adapter',
        ]
    width, height = meta["modelspec.resolution"].split("x")
    prompt = meta["huvi.prompt"] or "your prompt"
    render = f'video = pipe("{prompt}", num_frames={meta["huvi.frames"]}, width={width}, height={height}).frames[0]'
    return "```python\n" + "\n".join([*pipeline_lines, *load, render]) + "\n```\n"


def leaves_out(left_out: str, reason: str) -> str:
    return f"This file leaves out {left_out}: {reason}." if left_out else "Nothing: every trained layer is in the file."


def assemble(meta: dict[str, str], tags: tuple[str, ...], intro: str, training: str, files: str, diffusers: str, comfy: str, leaves: str) -> str:
    """The card's Markdown from its sections, titled by the run's category (or the file's title)."""
    sections = [
        front_matter(meta, tags),
        f"# huvi: {meta['huvi.category'] or meta['modelspec.title']}",
        intro,
        "## Training\n\n" + training,
        "## Files\n\n" + files,
        "## diffusers\n\n" + diffusers,
        "## ComfyUI\n\n" + comfy,
        "## What this format leaves out\n\n" + leaves,
    ]
    return "\n\n".join(sections) + "\n"
