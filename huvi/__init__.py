"""huvi: few-shot preference fine-tuning (motion LoRA, then Diffusion-DPO LoRA) of a text-to-video model."""

__version__ = "0.1.0"
