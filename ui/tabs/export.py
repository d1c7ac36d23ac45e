"""6 · Export: a run's LoRA in a format of its model family, its model card, and one zip of everything."""

from __future__ import annotations

import gradio as gr

from ui.exporting import ExportHandlers
from ui.tabs import quiet


def export_tab(h: ExportHandlers) -> dict:
    runs = h.trained_runs()
    formats = h.format_choices(runs[0] if runs else None)
    gr.Markdown("Each export writes a model card beside the weights, with the run's settings, and one zip of both.")
    with gr.Row():
        with gr.Column(scale=2):
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Trained run", allow_custom_value=True)
            fmt = gr.Radio(formats, value=formats[0], label="Format")
            gr.Markdown(
                "The formats of the run's model family:\n"
                "- **diffusers**: `load_lora_weights` on the run's pipeline (AnimateDiff or Wan)\n"
                "- **kohya** (SD1.5): `lora_unet_*` keys with alpha, for A1111 / ComfyUI LoRA loaders\n"
                "- **comfy-motion** (SD1.5): the temporal layers in AnimateDiff naming, for ComfyUI-AnimateDiff-Evolved motion LoRAs\n"
                "- **comfy** (Wan): `diffusion_model.blocks.*` keys in the original Wan naming with alpha, for ComfyUI's LoraLoaderModelOnly"
            )
            merge = gr.Checkbox(False, label="Merge the motion and DPO adapters into one file")
            export = gr.Button("Export", variant="primary")
        with gr.Column(scale=3):
            download = gr.DownloadButton("Download all", visible=False, variant="primary")
            files = gr.File(label="Files (⇣ beside a file downloads it): the zip, the LoRA files, the model card", file_count="multiple", interactive=False)
            with gr.Accordion("Metadata", open=False):
                metadata = gr.JSON(show_label=False)
            card = gr.Markdown(label="Model card")
    run.change(h.formats, inputs=[run, fmt], outputs=fmt, api_visibility="private")
    export.click(
        h.export, inputs=[run, fmt, merge], outputs=[files, card, metadata, download], api_name="export", concurrency_limit=1, show_progress_on=quiet()
    )
    return {"run": run}
