"""The Wan family's LoRA target sets: regexes `fullmatch`ed by peft against the dotted module names
of a `WanTransformer3DModel` (blocks.N.attn1 = self-attention over every latent token of the clip,
blocks.N.attn2 = cross-attention to the text, blocks.N.ffn = the feed-forward network)."""

# Self- and cross-attention projections of every block: the DPO adapter.
ATTENTION = r"blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
# The attention projections plus the feed-forward layers: the motion adapter. Wan has no separate
# temporal modules (its self-attention spans frames and pixels at once), so motion lives in every block.
MOTION_TARGETS = r"blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2))"
