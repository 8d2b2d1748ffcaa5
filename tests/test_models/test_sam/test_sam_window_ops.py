"""SAMFastBlock and the one-pass window ops equal segment-anything's
windowed blocks (fp32, gradients included) and allocate no (N, N) tensor
on the folded (GPU default) path."""
import copy
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import (Block, window_partition,
                                                     window_unpartition)

from rsrefseg_mm.models.sam import sam_fast_attention as fast_module
from rsrefseg_mm.models.sam.sam_fast_attention import (SAMFastAttention,
                                                       SAMFastBlock,
                                                       default_rel_pos_mode,
                                                       enable_fast_attention)
from rsrefseg_mm.models.sam.sam_window_ops import (_partition_functional,
                                                   _unpartition_add_functional,
                                                   window_partition_padded,
                                                   window_unpartition_add)
from helpers import assert_close_to_reference, load_script, sam_block_pair

TOOLS = Path(__file__).resolve().parents[3] / 'tools' / 'analysis_tools'
GRIDS = [(64, 64, 14), (16, 16, 8), (10, 7, 4), (3, 5, 4), (5, 3, 4),
         (4, 8, 4)]


@pytest.mark.parametrize('H, W, ws', GRIDS)
def test_partition_equals_padded_stock_partition(H, W, ws):
    torch.manual_seed(0)
    x = torch.randn(2, H, W, 6)
    ref, _ = window_partition(x, ws)  # zero padding
    assert torch.equal(window_partition_padded(x, ws), ref)
    pad = torch.randn(6)
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = pad.expand(2, Hp, Wp, 6).clone()
    xp[:, :H, :W] = x
    ref, _ = window_partition(xp, ws)
    out = window_partition_padded(x, ws, pad)
    assert out.is_contiguous() and torch.equal(out, ref)


@pytest.mark.parametrize('H, W, ws', GRIDS)
def test_unpartition_add_equals_stock(H, W, ws):
    torch.manual_seed(0)
    shortcut = torch.randn(2, H, W, 6)
    nW = -(-H // ws) * -(-W // ws)
    windows = torch.randn(2 * nW, ws, ws, 6)
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    ref = shortcut + window_unpartition(windows, ws, (Hp, Wp), (H, W))
    assert torch.equal(window_unpartition_add(shortcut, windows, ws), ref)
    with pytest.raises(ValueError, match='windows must have shape'):
        window_unpartition_add(shortcut, windows[1:], ws)


@pytest.mark.parametrize('H, W, ws', GRIDS)
def test_compile_formulations_equal_the_eager_ops(H, W, ws):
    """The pad/where/permute forms used under torch.compile, forward and
    backward."""
    torch.manual_seed(0)
    x = torch.randn(2, H, W, 6, requires_grad=True)
    pad = torch.randn(6, requires_grad=True)
    nW = -(-H // ws) * -(-W // ws)
    g = torch.randn(2 * nW, ws, ws, 6)
    outs, grads = [], []
    for fn in (window_partition_padded, _partition_functional):
        out = fn(x, ws, pad) if fn is window_partition_padded else fn(
            x, pad, ws)
        outs.append(out)
        grads.append(
            torch.autograd.grad(
                out, (x, pad), g, allow_unused=True, materialize_grads=True))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    shortcut = torch.randn(2, H, W, 6)
    assert torch.equal(
        window_unpartition_add(shortcut, g, ws),
        _unpartition_add_functional(shortcut, g, ws))


@pytest.mark.parametrize('H, W, ws', [(5, 7, 3), (6, 3, 3), (4, 4, 4)])
def test_window_ops_gradcheck(H, W, ws):
    torch.manual_seed(0)
    x = torch.randn(2, H, W, 3, dtype=torch.double, requires_grad=True)
    pad = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: window_partition_padded(a, ws, b), (x, pad))
    nW = -(-H // ws) * -(-W // ws)
    win = torch.randn(
        2 * nW, ws, ws, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: window_unpartition_add(a, b, ws), (x, win))


def _spy_window_ops(monkeypatch):
    calls = []
    for name in ('window_partition_padded', 'window_unpartition_add'):
        fn = getattr(fast_module, name)

        def spy(*args, _fn=fn, _name=name, **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setattr(fast_module, name, spy)
    return calls


def _assert_grads_close(stock, fast, x, x2):
    assert_close_to_reference(x2.grad, x.grad, what='input')
    names = [n for n, p in stock.named_parameters() if p.requires_grad]
    assert names
    for name in names:
        g1 = stock.get_parameter(name).grad
        g2 = fast.get_parameter(name).grad
        assert_close_to_reference(g2, g1, what=name)


@pytest.mark.parametrize('window_qkv', ['real', 'padded'])
@pytest.mark.parametrize('rel_pos_mode', [None, 'augmented', 'mask'])
def test_fused_window_block_matches_stock_with_gradients(
        monkeypatch, window_qkv, rel_pos_mode):
    """64 x 64 tokens, 14 x 14 windows: padded to 70 x 70 (5 x 5 windows);
    the qkv bias is non-zero, so the padded keys/values matter."""
    calls = _spy_window_ops(monkeypatch)
    stock, fast = sam_block_pair()
    fast.window_qkv = window_qkv
    fast.attn.rel_pos_mode = rel_pos_mode
    x = torch.randn(2, 64, 64, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert calls == ['window_partition_padded', 'window_unpartition_add']
    assert_close_to_reference(out_fast, out_stock)
    out_stock.square().mean().backward()
    out_fast.square().mean().backward()
    _assert_grads_close(stock, fast, x, x2)


def test_fused_window_block_inference_paths():
    """no_grad: CPU default chunked mask slices, and the folded path."""
    stock, fast = sam_block_pair()
    x = torch.randn(1, 64, 64, 32)
    with torch.no_grad():
        ref = stock(x)
        for mode in (None, 'augmented', 'mask'):
            fast.attn.rel_pos_mode = mode
            for window_qkv in ('real', 'padded'):
                fast.window_qkv = window_qkv
                assert_close_to_reference(
                    fast(x), ref, what=f'{mode} {window_qkv}')
    fast.window_qkv = 'diagonal'
    with pytest.raises(ValueError, match='window_qkv'):
        fast(x)


def test_fused_window_block_with_lora_qkv():
    """LoRA on qkv: padded positions get the base layer's bias (the LoRA
    branch maps 0 to 0); training and merged inference."""
    stock, fast = sam_block_pair(lora=True)
    assert fast.attn.qkv_bias() is fast.attn.qkv.original_layer.bias
    x = torch.randn(1, 64, 64, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert_close_to_reference(out_fast, out_stock)
    out_stock.square().mean().backward()
    out_fast.square().mean().backward()
    _assert_grads_close(stock, fast, x, x2)
    assert fast.attn.qkv.original_layer.bias.grad is None  # frozen
    stock.eval(), fast.eval()
    with torch.no_grad():
        assert_close_to_reference(fast(x), stock(x))


def test_small_grids_keep_the_stock_block(monkeypatch):
    """Grids under fused_window_min_tokens (the tiny demo: 16 x 16) run
    segment-anything's Block.forward: same ops, same rounding."""
    calls = _spy_window_ops(monkeypatch)
    stock, fast = sam_block_pair(grid=16, ws=8)
    x = torch.randn(2, 16, 16, 32)
    assert not fast.uses_fused_windows(x)
    fast.attn.rel_pos_mode = 'mask'
    stock_forward = Block.forward(fast, x)
    assert torch.equal(fast(x), stock_forward)
    assert calls == []
    assert SAMFastBlock.fused_window_min_tokens == 1024
    fast.fused_window_min_tokens = 256
    assert fast.uses_fused_windows(x)
    assert_close_to_reference(fast(x), stock(x))
    assert calls == ['window_partition_padded', 'window_unpartition_add']


def test_tiny_demo_encoder_keeps_stock_blocks():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401
    cfg_file = sorted((TOOLS.parents[1] / 'configs' /
                       'rsrefseg').glob('rsrefseg-tiny_*.py'))[0]
    cfg = Config.fromfile(str(cfg_file))
    init_default_scope('mmseg')
    head = MODELS.build(cfg.model.decode_head)
    blocks = list(head.image_encoder.blocks)
    assert all(type(b) is SAMFastBlock for b in blocks)
    x = torch.zeros(1, 16, 16, 64)  # the demo's 16 x 16 grid
    assert not any(b.uses_fused_windows(x) for b in blocks)


def test_fused_encoder_matches_stock_encoder():
    """Whole encoder with a 64 x 64 grid (windowed + global blocks)."""
    torch.manual_seed(0)
    stock = ImageEncoderViT(
        img_size=256,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(1, ),
        out_chans=16,
        norm_layer=partial(nn.LayerNorm, eps=1e-6))
    for name, p in stock.named_parameters():
        if 'rel_pos' in name or 'qkv.bias' in name:
            nn.init.normal_(p, std=0.5)
    fast = copy.deepcopy(stock)
    enable_fast_attention(fast)
    for m in fast.modules():
        if isinstance(m, SAMFastAttention):
            m.rel_pos_mode = 'augmented'  # the GPU default
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_stock, out_fast = stock(x), fast(x2)
    assert_close_to_reference(out_fast, out_stock)
    # a random read-out: the sum of squares of the neck's LayerNorm output
    # hardly depends on its input (gradients at rounding-noise level)
    probe = torch.randn_like(out_stock)
    (out_stock * probe).sum().backward()
    (out_fast * probe).sum().backward()
    _assert_grads_close(stock, fast, x, x2)


def test_gpu_default_is_folded_everywhere():
    for needs_grad in (False, True):
        for tokens in (64, 196, 256, 4096):
            assert default_rel_pos_mode('cuda', needs_grad, tokens,
                                        1024) == 'augmented'
    # CPU: unchanged (the demo's 16 x 16 grid trains with the mask)
    assert default_rel_pos_mode('cpu', False, 4096, 1024) == 'chunked'
    assert default_rel_pos_mode('cpu', True, 256, 1024) == 'mask'
    assert default_rel_pos_mode('cpu', True, 4096, 1024) == 'augmented'


@pytest.mark.parametrize('window', [14, 0])
def test_folded_blocks_allocate_no_attention_matrix(window):
    """The GPU default ('augmented') in a windowed (64 x 64 grid, 14 x 14
    windows) and a global (32 x 32) block: forward + backward write no
    tensor with two token axes of attention-matrix size; the mask path
    does (bias and its gradient)."""
    OpRecorder = load_script('.dev_scripts/sam_block_benchmark.py').OpRecorder
    grid = 64 if window else 32
    stock, fast = sam_block_pair(grid=grid, ws=window)
    seq = window**2 if window else grid**2
    seqs = 25 if window else 1
    big = seqs * 4 * seq * seq // 2

    def ops(mode):
        fast.attn.rel_pos_mode = mode
        x = torch.randn(1, grid, grid, 32, requires_grad=True)
        with OpRecorder(seq, big) as rec:
            fast(x).square().mean().backward()
        return rec.big

    assert ops('augmented') == []
    assert len(ops('mask')) >= 2


def test_augmented_head_size_is_padded_to_a_multiple_of_8(monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(fast_module.F, 'scaled_dot_product_attention', spy)
    stock, fast = sam_block_pair()
    fast.attn.rel_pos_mode = 'augmented'
    x = torch.randn(1, 64, 64, 32)
    with torch.no_grad():
        assert_close_to_reference(fast(x), stock(x))
    assert seen == [(40, 40, 40)]  # 8 + 14 + 14 = 36 -> 40
