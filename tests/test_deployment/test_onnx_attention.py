"""SAM's attention as exported: relative positions folded into q and k in
the token-major layout, ONNX Runtime's fused MultiHeadAttention or standard
operators, the same numbers as segment-anything."""
import io

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention

from rsrefseg_mm.deployment.onnx_attention import (MultiHeadAttentionFunction,
                                                   OnnxSAMAttention,
                                                   rel_pos_terms)
from rsrefseg_mm.deployment.onnx_symbolics import (CONTRIB_DOMAIN,
                                                   CONTRIB_VERSION,
                                                   onnx_symbolics)
from rsrefseg_mm.models.sam import (decomposed_rel_pos_terms,
                                    fold_rel_pos_into_qk)
from helpers import assert_close_to_reference


def test_rel_pos_terms_token_major():
    """Non-square grid (7 x 5), the terms of the head-major reference."""
    torch.manual_seed(0)
    q = torch.randn(2, 35, 3, 8)  # (B, N, nH, C)
    rel_pos_h, rel_pos_w = torch.randn(13, 8), torch.randn(9, 8)
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, 7, 5)
    want_h, want_w = decomposed_rel_pos_terms(
        q.transpose(1, 2), rel_pos_h, rel_pos_w, 7, 5)
    assert rel_h.shape == (2, 35, 3, 7) and rel_w.shape == (2, 35, 3, 5)
    torch.testing.assert_close(rel_h, want_h.transpose(1, 2))
    torch.testing.assert_close(rel_w, want_w.transpose(1, 2))


def test_fold_token_major_equals_head_major():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 35, 8), torch.randn(2, 3, 35, 8)
    rel_h, rel_w = torch.randn(2, 3, 35, 7), torch.randn(2, 3, 35, 5)
    want = fold_rel_pos_into_qk(q, k, rel_h, rel_w, 0.3)
    got = fold_rel_pos_into_qk(
        *(t.transpose(1, 2) for t in (q, k, rel_h, rel_w)), 0.3, token_dim=1)
    assert want[0].shape[-1] == 24  # 8 + 7 + 5 -> multiple of 8
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.transpose(1, 2))


def test_multihead_function_value_head_size():
    """q/k head size 24, v's 8: token-major multi-head SDPA."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 10, 3 * 24), torch.randn(2, 12, 3 * 24), \
        torch.randn(2, 12, 3 * 8)
    out = MultiHeadAttentionFunction.apply(q, k, v, 3, 0.2)

    def heads(t):
        return t.view(2, t.shape[1], 3, -1).transpose(1, 2)

    want = F.scaled_dot_product_attention(
        heads(q), heads(k), heads(v), scale=0.2).transpose(1, 2).flatten(2)
    assert out.shape == (2, 10, 24)
    torch.testing.assert_close(out, want)


def export_attention(attn, x, contrib_ops):
    attn.__class__ = OnnxSAMAttention
    attn.contrib_ops = contrib_ops
    f = io.BytesIO()
    with onnx_symbolics(18), torch.no_grad():
        torch.onnx.export(
            attn, (x, ),
            f,
            dynamo=False,
            opset_version=18,
            custom_opsets={CONTRIB_DOMAIN: CONTRIB_VERSION})
    return f.getvalue()


@pytest.mark.parametrize('contrib_ops', [True, False])
@pytest.mark.parametrize('use_rel_pos', [True, False])
def test_exported_attention_equals_segment_anything(contrib_ops, use_rel_pos):
    """A global block's attention on a 6 x 9 grid (2 images, 4 heads)."""
    torch.manual_seed(0)
    attn = Attention(32, 4, use_rel_pos=use_rel_pos, input_size=(6, 9)).eval()
    if use_rel_pos:  # segment-anything initialises them to zero
        torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(attn.rel_pos_w, std=0.5)
    x = torch.randn(2, 6, 9, 32)
    with torch.no_grad():
        want = attn(x).numpy()  # stock segment-anything
    model = onnx.load_from_string(export_attention(attn, x, contrib_ops))
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ((CONTRIB_DOMAIN, 'MultiHeadAttention') in ops) == contrib_ops
    assert ('', 'Einsum') not in ops
    assert (('', 'Softmax') in ops) != contrib_ops
    with torch.no_grad():
        torch_out = attn(x).numpy()  # the export class in PyTorch
    sess = ort.InferenceSession(model.SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert_close_to_reference(torch_out, want, what='export class')
    assert_close_to_reference(got, want, what='ONNX Runtime')
