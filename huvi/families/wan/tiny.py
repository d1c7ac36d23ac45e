"""Tiny random-weight Wan components, built offline from configs in code (the `wan-tiny` preset).

The VAE follows diffusers' own tests (tests/pipelines/wan/test_wan.py: base_dim 3, z_dim 16); the
transformer is wider and deeper than their 2 layers of 2 heads x 12 channels, which learned the toy
preferences less well (TRANSFORMER). Those tests download a tiny T5; here a UMT5 encoder of the same
class as Wan's and a character-level tokenizer are built locally. Weights come from a fixed seed
inside `fork_rng`, so two builds are identical and the caller's random state is untouched.
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

# 4 layers of 4 heads x 16 channels (width 64 = the 16 channels x 2 x 2 of a patch, so a block's
# residual stream can hold a whole patch), ffn 128. Held-out accuracy of examples/learn_preferences.py
# (direction, seeds 1-2, DPO on attn1+attn2 at beta 2500): diffusers' test size (2 layers of 2 x 12,
# ffn 32) 0.64 after 100 DPO steps; 2 layers of 4 x 16, ffn 128: 0.70 (100 steps), 0.70 (200);
# 4 layers: 0.73 (200). With the preset's DPO, 4 layers of 4 x 32 and ffn 256 gave 0.72 against this
# size's 0.78. 0.26 M parameters (0.03 M before); a step on one CPU thread of a busy 2-core machine
# (python -m huvi bench --preset wan-tiny): motion 34 ms, DPO 50-62 ms, against 18 and 33 ms.
TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=16,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=256,
    ffn_dim=128,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
# 8x spatial (three 2x stages), 4x temporal after frame 0: 9 frames of 64x64 -> 3 x 8 x 8 latents.
# A 4x-spatial VAE (dim_mult [1, 1, 1], temperal_downsample [True, True], scale_factor_spatial 4:
# 3 x 16 x 16 latents, 8 x 8 tokens a latent frame, its own latents_mean/std measured) learned the
# direction preference no better: 0.67 against this VAE's 0.69 (seeds 1-3, presets/wan-tiny.yaml).
VAE = dict(
    base_dim=3,
    z_dim=16,
    dim_mult=[1, 1, 1, 1],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    # Per-channel mean and std of this random encoder's posterior means on the synthetic clips
    # (huvi.synthetic.direction_category, 6 clips of seed 0, 9 frames at stride 3 and 64x64; measured
    # with WEIGHT_SEED; tests/test_wan.py measures them again),
    # so normalised latents have about zero mean and unit variance,
    # as Wan's published latents_mean/latents_std give for the real VAE.
    latents_mean=[0.021, 0.066, 0.069, -0.138, -0.165, -0.028, 0.329, 0.368, 0.181, -0.16, -0.109, 0.016, 0.177, 0.106, 0.255, 0.081],
    latents_std=[0.096, 0.079, 0.093, 0.114, 0.084, 0.099, 0.106, 0.173, 0.094, 0.107, 0.104, 0.194, 0.063, 0.074, 0.228, 0.127],
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
        # each component from its own seeding, so resizing one leaves the others' weights (and the
        # VAE's measured latents_mean/std) as they are
        torch.manual_seed(WEIGHT_SEED)
        transformer = WanTransformer3DModel(**TRANSFORMER)
        torch.manual_seed(WEIGHT_SEED)
        vae = AutoencoderKLWan(**VAE)
        torch.manual_seed(WEIGHT_SEED)
        text_encoder = UMT5EncoderModel(text_config)
    return dict(
        transformer=transformer.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler=UniPCMultistepScheduler(**WAN21_SCHEDULER),
    )
