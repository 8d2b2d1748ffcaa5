"""SAMFastAttention equals segment-anything's attention."""
import copy
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention

from rsrefseg_mm.models.sam.sam_fast_attention import (
    SAMFastAttention, augmented_rel_pos_attention, chunked_rel_pos_attention,
    decomposed_rel_pos_bias, decomposed_rel_pos_terms, enable_fast_attention)
from helpers import assert_close_to_reference


def tiny_encoder(img_size=128):
    torch.manual_seed(0)
    enc = ImageEncoderViT(
        img_size=img_size,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=2,
        use_rel_pos=True,
        window_size=3,  # 8x8 grid -> padded windows
        global_attn_indexes=(1, ),
        out_chans=32,
        norm_layer=partial(nn.LayerNorm, eps=1e-6))
    # random-init SAM has zero relative positions: make them matter
    for name, p in enc.named_parameters():
        if 'rel_pos' in name:
            nn.init.normal_(p, std=0.5)
    return enc


def test_fast_attention_matches_stock_encoder():
    stock = tiny_encoder()
    fast = copy.deepcopy(stock)
    assert enable_fast_attention(fast) == 2
    assert all(type(b.attn) is SAMFastAttention for b in fast.blocks)
    # same parameter names -> checkpoints stay loadable
    assert stock.state_dict().keys() == fast.state_dict().keys()
    x = torch.randn(2, 3, 128, 128, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert_close_to_reference(out_fast, out_stock)
    # a random read-out: the sum of squares of the neck's LayerNorm output
    # hardly depends on its input (gradients at rounding-noise level)
    probe = torch.randn_like(out_stock)
    (out_stock * probe).sum().backward()
    (out_fast * probe).sum().backward()
    g1 = stock.blocks[1].attn.rel_pos_h.grad
    g2 = fast.blocks[1].attn.rel_pos_h.grad
    assert_close_to_reference(g2, g1, what='rel_pos_h')
    assert_close_to_reference(x2.grad, x.grad, what='input')


def test_rel_pos_is_used():
    """The bias path is exercised: zeroing rel_pos changes the output."""
    fast = tiny_encoder()
    enable_fast_attention(fast)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a = fast(x)
        for b in fast.blocks:
            b.attn.rel_pos_h.zero_()
            b.attn.rel_pos_w.zero_()
        b = fast(x)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize('use_rel_pos', [True, False])
def test_single_attention_layer(use_rel_pos):
    torch.manual_seed(1)
    stock = Attention(
        32, num_heads=4, use_rel_pos=use_rel_pos, input_size=(5, 7))
    if use_rel_pos:
        nn.init.normal_(stock.rel_pos_h)
        nn.init.normal_(stock.rel_pos_w)
    fast = copy.deepcopy(stock)
    enable_fast_attention(fast)
    x = torch.randn(3, 5, 7, 32)
    assert torch.allclose(stock(x), fast(x), atol=1e-5)


def _full_mask_attention(q, k, v, rel_pos_h, rel_pos_w, H, W):
    bias = decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, H, W)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


@pytest.mark.parametrize(
    'B, nH, H, W, max_mask_bytes',
    [
        (3, 5, 4, 6, 2 * (24 * 24 * 4)),  # 2 heads per slice, 5 = 2+2+1
        (2, 3, 5, 7, 10 * 35 * 4),  # 10 queries per slice, 35 = 3*10+5
        (1, 4, 6, 6, 1),  # one query per slice
        (2, 2, 3, 4, 1 << 30),  # every head of an image in one slice
    ])
def test_chunked_attention_equals_full_mask(B, nH, H, W, max_mask_bytes):
    torch.manual_seed(0)
    C = 8
    qkv = torch.randn(B, H * W, 3, nH, C).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # permuted views, as in the attention layer
    rel_pos_h, rel_pos_w = torch.randn(2 * H - 1, C), torch.randn(2 * W - 1, C)
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, H, W)
    out = chunked_rel_pos_attention(q, k, v, rel_h, rel_w, max_mask_bytes)
    ref = _full_mask_attention(q, k, v, rel_pos_h, rel_pos_w, H, W)
    assert out.shape == ref.shape == (B, nH, H * W, C)
    assert torch.allclose(out, ref, atol=1e-5)
    # stored as (B, N, nH, C): merging the heads back is a view
    assert out.transpose(1, 2).is_contiguous()


def test_chunked_attention_never_materialises_the_full_bias():
    from test_sam_rel_pos_bias_copies import BigOutputs
    torch.manual_seed(0)
    B, nH, H, W, C = 1, 4, 8, 8, 16
    N = H * W
    q, k, v = (torch.randn(B, nH, N, C) for _ in range(3))
    rel_pos_h, rel_pos_w = torch.randn(2 * H - 1, C), torch.randn(2 * W - 1, C)
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, H, W)
    big = nH * N * N // 2  # elements: half of the full bias
    with BigOutputs(big) as rec:
        # a bias buffer of 8 query rows of one head (2 KiB)
        chunked_rel_pos_attention(q, k, v, rel_h, rel_w, 8 * N * 4)
    assert rec.ops == [], rec.ops
    with BigOutputs(big) as rec:
        _full_mask_attention(q, k, v, rel_pos_h, rel_pos_w, H, W)
    assert 'aten::add' in rec.ops  # the recorder does see a full bias


def _spy_modes(monkeypatch):
    """Record which rel-pos implementation each forward uses."""
    from rsrefseg_mm.models.sam import sam_fast_attention as module
    calls = []
    for name in ('chunked_rel_pos_attention', 'augmented_rel_pos_attention',
                 'decomposed_rel_pos_bias'):
        fn = getattr(module, name)

        def spy(*args, _fn=fn, _name=name, **kwargs):
            calls.append(_name.split('_')[0])
            return _fn(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return calls


def _layer_pair(input_size=(6, 5)):
    torch.manual_seed(2)
    stock = Attention(32, num_heads=4, use_rel_pos=True, input_size=input_size)
    nn.init.normal_(stock.rel_pos_h)
    nn.init.normal_(stock.rel_pos_w)
    fast = copy.deepcopy(stock)
    enable_fast_attention(fast)
    return stock, fast


def test_default_mode_per_autograd_state(monkeypatch):
    """CPU: no graph -> chunked mask slices; training -> folded into q/k
    from ``fold_min_tokens`` tokens on, full mask below."""
    calls = _spy_modes(monkeypatch)
    stock, fast = _layer_pair()
    fast.max_mask_bytes = 3 * 30 * 4  # several query blocks per head
    fast.fold_min_tokens = 30  # the 6 x 5 grid
    x = torch.randn(2, 6, 5, 32)
    with torch.no_grad():
        ref = stock(x)
        out = fast(x)
    assert calls == ['chunked']
    assert torch.allclose(out, ref, atol=1e-5)
    out = fast(x)  # parameters require grad
    assert calls == ['chunked', 'augmented']
    assert out.requires_grad
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out_bf16 = fast(x)
    assert calls[-1] == 'chunked' and out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_bf16 = fast(x)
    assert calls[-1] == 'augmented' and out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float() - ref).abs().max() < 0.1 * ref.abs().max()
    fast.fold_min_tokens = 31
    assert torch.allclose(fast(x), ref, atol=1e-5)
    assert calls[-1] == 'decomposed'  # the full-mask path
    assert SAMFastAttention.fold_min_tokens == 1024  # SAM global blocks


@pytest.mark.parametrize('mode', ['mask', 'augmented'])
def test_forced_modes_match_stock_with_gradients(monkeypatch, mode):
    calls = _spy_modes(monkeypatch)
    stock, fast = _layer_pair((7, 4))
    fast.rel_pos_mode = mode
    x = torch.randn(3, 7, 4, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert calls == [{'mask': 'decomposed'}.get(mode, mode)]
    assert torch.allclose(out_stock, out_fast, atol=1e-5)
    out_stock.square().sum().backward()
    out_fast.square().sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-4, rtol=1e-4)
    for name in ('rel_pos_h', 'rel_pos_w', 'qkv.weight', 'proj.weight'):
        g1 = stock.get_parameter(name).grad
        g2 = fast.get_parameter(name).grad
        assert torch.allclose(g1, g2, atol=1e-4, rtol=1e-4), name


def test_chunked_mode_refuses_gradients():
    _, fast = _layer_pair()
    fast.rel_pos_mode = 'chunked'
    with pytest.raises(RuntimeError, match='cannot be differentiated'):
        fast(torch.randn(1, 6, 5, 32))
    fast.rel_pos_mode = 'flash'
    with pytest.raises(ValueError, match='rel_pos_mode'):
        fast(torch.randn(1, 6, 5, 32))


def test_augmented_training_keeps_no_full_bias():
    """Forward + backward with the bias folded into q/k allocates no
    (B, nH, N, N) tensor; the full-mask path does (bias and its grad)."""
    from test_sam_rel_pos_bias_copies import BigOutputs
    torch.manual_seed(0)
    B, nH, H, W, C = 1, 4, 16, 16, 16
    N = H * W
    rel_pos_h = torch.randn(2 * H - 1, C, requires_grad=True)
    rel_pos_w = torch.randn(2 * W - 1, C, requires_grad=True)
    big = nH * N * N // 2

    def step(fn):
        q, k, v = (
            torch.randn(B, nH, N, C, requires_grad=True) for _ in range(3))
        with BigOutputs(big) as rec:
            fn(q, k, v).square().sum().backward()
        return rec.ops, q.grad

    def augmented(q, k, v):
        rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, H, W)
        return augmented_rel_pos_attention(q, k, v, rel_h, rel_w, C**-0.5)

    ops, _ = step(augmented)
    assert ops == [], ops
    ops, _ = step(lambda q, k, v: _full_mask_attention(q, k, v, rel_pos_h,
                                                       rel_pos_w, H, W))
    assert len(ops) >= 2, ops  # the bias, and its gradient
