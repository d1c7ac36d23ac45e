"""Wan 2.1 / 2.2 (diffusers' WanTransformer3DModel, AutoencoderKLWan and a UMT5 text encoder)."""
