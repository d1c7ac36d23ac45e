"""The SD1.5 family's LoRA target sets: regexes `fullmatch`ed by peft against the dotted module
names of a `UNetMotionModel` (the config's adapter defaults)."""

# Attention projections of every attention layer (spatial self/cross and temporal).
ALL_ATTENTION = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)"
# Temporal attention (AnimateDiff motion modules) plus the spatial self-attention (attn1).
MOTION_TARGETS = (
    r".*motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
    r"|.*attentions\.\d+\.transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"
)
