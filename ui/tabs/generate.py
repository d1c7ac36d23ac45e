"""5 · Generate: a clip from a trained run, with and without its DPO adapter, and its earlier clips."""

from __future__ import annotations

import gradio as gr

from ui.generating import GenerateHandlers
from ui.tabs import GPU


def generate_tab(h: GenerateHandlers) -> dict:
    runs = h.trained_runs()
    gr.Markdown("Runs with a trained adapter are listed here; the DPO adapter's strength can be dialled.")
    gpu = gr.Markdown(h.gpu_note())
    with gr.Row():
        with gr.Column(scale=2):
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Trained run", allow_custom_value=True)
            prompt = gr.Textbox(h.run_prompt(runs[0] if runs else None), label="Prompt", lines=2)
            first_frame = gr.Image(label="First frame (optional)", type="filepath", height=200, elem_classes="huvi-upscale")
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0)
                steps = gr.Number(0, label="Steps", precision=0, minimum=0)
                guidance = gr.Number(0, label="Guidance", minimum=0)
            dpo_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="DPO adapter strength (0 = motion only)")
            motion_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Motion adapter strength")
            compare = gr.Checkbox(False, label="Also render without DPO, side by side")
            generate = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            video = gr.Video(label="Result", interactive=False, loop=True, autoplay=True, height=360)
            compared = gr.Video(label="Without DPO | with DPO", interactive=False, loop=True, visible=False, height=360)
            used_frame = gr.Image(label="First frame used", interactive=False, height=200, elem_classes="huvi-upscale")
            note = gr.Markdown()
    samples = gr.Gallery(label="Earlier clips of this run", columns=6, height=260, visible=False, allow_preview=False, elem_classes="huvi-pixels", fit_columns=False)
    for trigger in (run.change,):
        trigger(h.run_defaults, inputs=run, outputs=[prompt, steps, guidance, first_frame], api_visibility="private")
        trigger(h.samples_gallery, inputs=run, outputs=samples, api_visibility="private")
    samples.select(h.reuse_sample, inputs=run, outputs=[prompt, seed, steps, guidance, dpo_scale, motion_scale], api_visibility="private")
    # Queued behind any other GPU event of this app; refused with a sentence while a training job holds the GPU.
    generate.click(
        h.generate,
        inputs=[run, prompt, first_frame, seed, steps, guidance, dpo_scale, motion_scale, compare],
        outputs=[video, compared, used_frame, note],
        api_name="generate", concurrency_limit=1, concurrency_id=GPU, show_progress_on=video,
    ).then(h.gpu_note, outputs=gpu, api_visibility="private").then(h.samples_gallery, inputs=run, outputs=samples, api_visibility="private")
    return {"run": run, "gpu": gpu, "samples": samples, "defaults": [prompt, steps, guidance, first_frame]}
