"""The SD1.5 + AnimateDiff family: an SD1.5 UNet with an AnimateDiff motion adapter (`UNetMotionModel`),
its VAE and CLIP text encoder, trained on SD1.5's DDPM epsilon schedule (huvi.families.sd15.family)."""
