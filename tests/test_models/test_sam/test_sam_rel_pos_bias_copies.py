"""The decomposed rel-pos bias is written once (no extra (N, N) copy)."""
import torch
from segment_anything.modeling.image_encoder import add_decomposed_rel_pos
from torch.utils._python_dispatch import TorchDispatchMode

from rsrefseg_mm.models.sam.sam_fast_attention import decomposed_rel_pos_bias

VIEWS = ('aten::view', 'aten::_unsafe_view', 'aten::reshape', 'aten::expand')


class BigOutputs(TorchDispatchMode):
    """Record ops that write a tensor of at least ``numel`` elements."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else [out]
        for t in outs:
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel and \
                    t.untyped_storage().nbytes() >= self.numel * 4 and \
                    func._schema.name not in VIEWS:
                self.ops.append(func._schema.name)
        return out


def test_bias_is_materialised_once_and_matches_segment_anything():
    torch.manual_seed(0)
    B, nH, H, W, C = 2, 3, 6, 5, 8
    # q as the attention layer makes it: a permuted view of the qkv output
    q = torch.randn(B, H * W, 3, nH, C).permute(2, 0, 3, 1, 4)[0]
    rel_h, rel_w = torch.randn(2 * H - 1, C), torch.randn(2 * W - 1, C)
    with BigOutputs(B * nH * (H * W)**2) as rec:
        bias = decomposed_rel_pos_bias(q, rel_h, rel_w, H, W)
    assert rec.ops == ['aten::add'], rec.ops
    ref = add_decomposed_rel_pos(
        torch.zeros(B * nH, H * W, H * W), q.reshape(B * nH, H * W, C), rel_h,
        rel_w, (H, W), (H, W))
    assert torch.allclose(bias.reshape(B * nH, H * W, H * W), ref, atol=1e-5)
