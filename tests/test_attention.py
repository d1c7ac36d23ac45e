"""Sparse-causal spatial self-attention: frame i attends to frames {0, i-1} (HuViDPO)."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from huvi.config import ModelConfig
from huvi.families.sd15.attention import SPATIAL_SELF_ATTENTION, FrameCount, SparseCausalAttnProcessor, set_spatial_attention, sparse_causal_indices
from huvi.families.sd15.models import load_unet

B, F, N, C = 2, 5, 6, 16  # videos, frames, tokens per frame, channels


def make_attention() -> Attention:
    torch.manual_seed(0)
    attn = Attention(query_dim=C, heads=2, dim_head=8)
    with torch.no_grad():  # non-trivial bias so every projection matters
        attn.to_out[0].bias.normal_()
    return attn.eval()


def run_sparse(attn: Attention, hidden: torch.Tensor, frames: int = F) -> torch.Tensor:
    return SparseCausalAttnProcessor(FrameCount(frames))(attn, hidden)


def frames_of(x: torch.Tensor, frames: int = F) -> torch.Tensor:
    return x.unflatten(0, (-1, frames))  # (b f, n, c) -> (b, f, n, c)


def reference_attention(attn: Attention, hidden: torch.Tensor, frames: int = F) -> torch.Tensor:
    """Written out by hand: frame i's queries against the keys/values of frames 0 and i-1."""
    x = frames_of(hidden, frames)  # (b, f, n, c)
    heads = attn.heads
    out = torch.empty(x.shape[0], frames, x.shape[2], C)
    for i in range(frames):
        context = torch.cat([x[:, 0], x[:, max(i - 1, 0)]], dim=1)  # (b, 2n, c)
        q = attn.to_q(x[:, i]).unflatten(-1, (heads, -1)).transpose(1, 2)  # (b, heads, n, hd)
        k = attn.to_k(context).unflatten(-1, (heads, -1)).transpose(1, 2)  # (b, heads, 2n, hd)
        v = attn.to_v(context).unflatten(-1, (heads, -1)).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        o = (weights @ v).transpose(1, 2).flatten(2)  # (b, n, heads*hd)
        out[:, i] = attn.to_out[0](o)
    return out.flatten(0, 1)  # (b f, n, c)


def test_indices_are_first_and_previous_frame():
    first, previous = sparse_causal_indices(5)
    assert first.tolist() == [0, 0, 0, 0, 0]
    assert previous.tolist() == [0, 0, 1, 2, 3]


def test_matches_hand_written_attention():
    attn = make_attention()
    hidden = torch.randn(B * F, N, C)
    with torch.no_grad():
        torch.testing.assert_close(run_sparse(attn, hidden), reference_attention(attn, hidden), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("i", range(F))
def test_frame_sees_only_first_previous_and_itself(i):
    attn = make_attention()
    hidden = torch.randn(B * F, N, C)
    with torch.no_grad():
        base = frames_of(run_sparse(attn, hidden))[:, i]
        allowed = {0, max(i - 1, 0), i}
        for j in range(F):
            changed = frames_of(hidden.clone())
            changed[:, j] += torch.randn_like(changed[:, j])
            out = frames_of(run_sparse(attn, changed.flatten(0, 1)))[:, i]
            if j in allowed:
                assert (out - base).abs().max() > 1e-3, f"frame {i} ignored a change of frame {j}"
            else:
                torch.testing.assert_close(out, base, rtol=0, atol=1e-6, msg=f"frame {i} saw frame {j}")


def test_frame_zero_is_plain_self_attention_over_frame_zero():
    attn = make_attention()
    hidden = torch.randn(B * F, N, C)
    with torch.no_grad():
        sparse = frames_of(run_sparse(attn, hidden))[:, 0]  # (b, n, c)
        alone = AttnProcessor2_0()(attn, frames_of(hidden)[:, 0].contiguous())  # frame 0 as its own batch
    torch.testing.assert_close(sparse, alone, rtol=1e-5, atol=1e-6)


def test_videos_in_a_batch_do_not_mix():
    attn = make_attention()
    hidden = torch.randn(B * F, N, C)
    with torch.no_grad():
        base = frames_of(run_sparse(attn, hidden))
        changed = frames_of(hidden.clone())
        changed[1] += 1.0  # every frame of the second video
        out = frames_of(run_sparse(attn, changed.flatten(0, 1)))
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=1e-6)
    assert (out[1] - base[1]).abs().max() > 1e-3


def test_gradients_reach_inputs_and_projections():
    attn = make_attention().train()
    hidden = torch.randn(B * F, N, C, requires_grad=True)
    frames_of(run_sparse(attn, hidden))[:, 3].pow(2).sum().backward()  # loss on frame 3 only
    grad = frames_of(hidden.grad)  # (b, f, n, c)
    for j in (0, 2, 3):  # frame 3 reads frames 0, 2 and itself
        assert grad[:, j].abs().sum() > 0, f"no gradient to frame {j}"
    for j in (1, 4):
        assert torch.count_nonzero(grad[:, j]) == 0, f"gradient leaked to frame {j}"
    for proj in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_refuses_cross_attention_and_masks():
    attn = make_attention()
    hidden = torch.randn(B * F, N, C)
    with pytest.raises(ValueError, match="self-attention"):
        SparseCausalAttnProcessor(FrameCount(F))(attn, hidden, encoder_hidden_states=hidden)


def test_batch_not_a_whole_number_of_videos_is_an_error():
    attn = make_attention()
    with pytest.raises(RuntimeError, match="whole number"):
        SparseCausalAttnProcessor(FrameCount(4))(attn, torch.randn(6, N, C))


# in the tiny UNetMotionModel ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def unet():
    return load_unet(ModelConfig(source="tiny"))  # sparse_causal by default


def _kinds(unet) -> dict[str, str]:
    return {name: type(proc).__name__ for name, proc in unet.attn_processors.items()}


def test_installed_only_on_spatial_self_attention(unet):
    kinds = _kinds(unet)
    sparse = {name for name, kind in kinds.items() if kind == "SparseCausalAttnProcessor"}
    spatial_attn1 = {
        name for name in kinds if ".attentions." in name and name.endswith("attn1.processor") and "motion_modules" not in name
    }
    assert len(spatial_attn1) >= 3  # down, mid and up blocks of the tiny UNet
    assert sparse == spatial_attn1
    assert not any("motion_modules" in name or "attn2" in name for name in sparse)
    assert all(SPATIAL_SELF_ATTENTION.fullmatch(name) for name in sparse)
    # one shared processor, so one frame counter serves every layer
    assert len({id(unet.attn_processors[name]) for name in sparse}) == 1


def identity_temporal(unet):
    """Zero every motion module's proj_out, so the temporal modules pass frames through unchanged."""
    for name, module in unet.named_modules():
        if ".motion_modules." in f".{name}" and name.endswith("proj_out"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    return unet


def _unet_out(unet, x: torch.Tensor) -> torch.Tensor:
    text = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=text.repeat_interleave(x.shape[2], dim=0)).sample


def test_unet_is_causal_over_frames(unet):
    """With the temporal modules made the identity (proj_out zeroed), the sparse-causal spatial
    attention is the only path between frames, so in the whole UNet frame i depends on frames 0..i."""
    unet = identity_temporal(copy.deepcopy(unet))  # a deep copy must keep its own frame counter
    x = torch.randn(1, 4, 6, 16, 16, generator=torch.Generator().manual_seed(0))  # (b, c, f, h, w)
    base = _unet_out(unet, x)
    later = x.clone()
    later[:, :, 5] += 1.0
    out = _unet_out(unet, later)
    torch.testing.assert_close(out[:, :, :5], base[:, :, :5], rtol=0, atol=1e-5)
    assert (out[:, :, 5] - base[:, :, 5]).abs().max() > 1e-3
    first = x.clone()
    first[:, :, 0] += 1.0
    out = _unet_out(unet, first)
    for i in range(6):
        assert (out[:, :, i] - base[:, :, i]).abs().max() > 1e-4, f"frame {i} ignores frame 0"
    # frame 0 alone (a 1-frame video) gives the same frame 0: the hook reads the new frame count
    torch.testing.assert_close(_unet_out(unet, x[:, :, :1]), base[:, :, :1], rtol=1e-4, atol=1e-5)


def test_full_attention_restores_standard_processors():
    unet = identity_temporal(load_unet(ModelConfig(source="tiny")))
    before = _kinds(unet)
    set_spatial_attention(unet, "full")
    after = _kinds(unet)
    assert "SparseCausalAttnProcessor" not in after.values()
    assert set(after.values()) == {"AttnProcessor2_0"}
    assert {n for n in before if before[n] != after[n]} == {n for n in before if before[n] == "SparseCausalAttnProcessor"}
    assert len(unet._forward_pre_hooks) == 0  # the frame-count hook is removed too

    x = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    base = _unet_out(unet, x)
    changed = x.clone()
    changed[:, :, 0] += 1.0
    out = _unet_out(unet, changed)
    # with per-frame attention (and identity temporal modules) frame 0 no longer reaches the others
    torch.testing.assert_close(out[:, :, 1:], base[:, :, 1:], rtol=0, atol=1e-5)

    set_spatial_attention(unet, "sparse_causal")
    assert _kinds(unet) == before
    assert len(unet._forward_pre_hooks) == 1  # installing again does not stack hooks
    set_spatial_attention(unet, "sparse_causal")
    assert len(unet._forward_pre_hooks) == 1
