"""Tiny random-weight Wan components, built offline from configs in code (the `wan-tiny` preset).

Sizes follow diffusers' own tests (tests/pipelines/wan/test_wan.py: a 2-layer transformer with 2
heads of 12 channels, a VAE of base_dim 3 and z_dim 16). Those tests download a tiny T5; here a
UMT5 encoder of the same class as Wan's and a character-level tokenizer are built locally. Weights
come from a fixed seed inside `fork_rng`, so two builds are identical and the caller's random state
is untouched.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from huvi.families.wan.diffusion import WAN21_SCHEDULER

WEIGHT_SEED = 1234
TEXT_DIM = 32  # the tiny UMT5's width, which the transformer's text_dim must match
TOKENS = 16  # prompt length (WanPipeline pads real prompts to 512)

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
# 8x spatial (three 2x stages), 4x temporal after frame 0: 9 frames of 64x64 -> 3 x 8 x 8 latents.
VAE = dict(
    base_dim=3,
    z_dim=16,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    # Per-channel mean and std of this random encoder's posterior means on the synthetic clips
    # (huvi.synthetic.direction_category, 6 clips, 9 frames at 64x64; measured once with WEIGHT_SEED),
    # so normalised latents have about zero mean and unit variance,
    # as Wan's published latents_mean/latents_std give for the real VAE.
    latents_mean=[0.039, 0.036, -0.056, 0.196, -0.065, 0.045, 0.236, -0.197, 0.167, 0.19, 0.268, 0.054, -0.083, 0.165, -0.086, -0.217],
    latents_std=[0.074, 0.11, 0.099, 0.075, 0.114, 0.116, 0.106, 0.093, 0.163, 0.093, 0.094, 0.066, 0.113, 0.113, 0.111, 0.078],
)
TEXT = dict(d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)


def build_tokenizer(max_length: int = TOKENS) -> PreTrainedTokenizerFast:
    """A character-level tokenizer (one id per printable ASCII character) with T5's special tokens,
    for prompts of `max_length` tokens."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for char in string.printable:
        vocab.setdefault(char, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length)


def build_components() -> dict:
    """transformer, vae, text_encoder, tokenizer and scheduler of the wan-tiny preset."""
    tokenizer = build_tokenizer()
    text_config = UMT5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **TEXT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        transformer = WanTransformer3DModel(**TRANSFORMER)
        vae = AutoencoderKLWan(**VAE)
        text_encoder = UMT5EncoderModel(text_config)
    return dict(
        transformer=transformer.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler=UniPCMultistepScheduler(**WAN21_SCHEDULER),
    )
