"""SAMFastAttention equals segment-anything's attention."""
import copy
from functools import partial

import pytest
import torch
import torch.nn as nn
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Attention

from rsrefseg_mm.models.utils.sam_fast_attention import (
    SAMFastAttention, enable_fast_attention)


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
    assert all(
        type(b.attn) is SAMFastAttention for b in fast.blocks)
    # same parameter names -> checkpoints stay loadable
    assert stock.state_dict().keys() == fast.state_dict().keys()
    x = torch.randn(2, 3, 128, 128, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert (out_stock - out_fast).abs().max().item() < 1e-4
    out_stock.square().sum().backward()
    out_fast.square().sum().backward()
    g1 = stock.blocks[1].attn.rel_pos_h.grad
    g2 = fast.blocks[1].attn.rel_pos_h.grad
    assert torch.allclose(g1, g2, atol=1e-3, rtol=1e-3)
    assert torch.allclose(x.grad, x2.grad, atol=1e-4, rtol=1e-3)


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
