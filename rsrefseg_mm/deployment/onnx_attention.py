"""SAM's image-encoder attention as exported to ONNX.

PyTorch's exporter writes ``F.scaled_dot_product_attention`` as ``MatMul``
-> ``Softmax`` -> ``MatMul``: the (B, nH, N, N) attention matrix (805 MB
per global block of SAM ViT-B at 1024) is written and read back, and a
relative-position bias would be a second such tensor. Exported here
(:class:`OnnxSAMAttention`):

- the relative positions are folded into q and k
  (:func:`~rsrefseg_mm.models.sam.fold_rel_pos_into_qk`): no bias tensor;
  their per-query terms are batched ``MatMul`` s (:func:`rel_pos_terms`)
  rather than ``Einsum`` s, which ONNX Runtime runs several times slower;
- q, k and v stay in the token-major layout of the ``qkv`` output
  (B, N, nH, C): no transposes around the attention;
- with ``contrib_ops`` (default), attention is ONNX Runtime's fused
  ``com.microsoft.MultiHeadAttention``, which never materialises the
  attention matrix; v keeps its own head size, so only the q·k product is
  widened by the folded positions.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos

from ..models.sam import SAMFastAttention, fold_rel_pos_into_qk
from .onnx_symbolics import multihead_attention


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor,
                  rel_pos_w: torch.Tensor, height: int,
                  width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`~rsrefseg_mm.models.sam.decomposed_rel_pos_terms` on
    token-major queries, as broadcast matrix products.

    Args:
        q (Tensor): Unscaled queries (B, H*W, nH, C).
        rel_pos_h (Tensor): Relative positions along height (2H-1, C).
        rel_pos_w (Tensor): Relative positions along width (2W-1, C).
        height (int): Token grid height H.
        width (int): Token grid width W.

    Returns:
        tuple[Tensor, Tensor]: ``rel_h`` (B, H*W, nH, H) and ``rel_w``
        (B, H*W, nH, W).
    """
    B, N, nH, C = q.shape
    Rh = get_rel_pos(height, height, rel_pos_h).to(q.dtype)  # (H, kH, C)
    Rw = get_rel_pos(width, width, rel_pos_w).to(q.dtype)  # (W, kW, C)
    # (B, H, W*nH, C) @ (H, C, kH) -> (B, H, W*nH, kH)
    rel_h = q.reshape(B, height, width * nH, C) @ Rh.transpose(1, 2)
    # (B, H, W, nH, C) @ (W, C, kW) -> (B, H, W, nH, kW)
    rel_w = q.reshape(B, height, width, nH, C) @ Rw.transpose(1, 2)
    return rel_h.reshape(B, N, nH, height), rel_w.reshape(B, N, nH, width)


class MultiHeadAttentionFunction(torch.autograd.Function):
    """Multi-head attention on token-major (B, S, nH * D) tensors that
    exports as ``com.microsoft.MultiHeadAttention`` (inference only).

    q and k share their head size D, v's may differ.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                num_heads: int, scale: float) -> torch.Tensor:
        """(B, S, nH * D), (B, T, nH * D), (B, T, nH * Dv) -> (B, S, nH *
        Dv)."""

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (num_heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), scale=scale)
        return out.transpose(1, 2).flatten(2)

    @staticmethod
    def symbolic(g, q, k, v, num_heads: int, scale: float):
        return multihead_attention(g, q, k, v, num_heads, scale)


class OnnxSAMAttention(SAMFastAttention):
    """:class:`~rsrefseg_mm.models.sam.SAMFastAttention` for export (same
    function; set by class swap on a copy of the model)."""

    #: attention as ``com.microsoft.MultiHeadAttention``; False: standard
    #: ONNX operators only
    contrib_ops: bool = True

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of a grid, from ``qkv`` output (B, H, W,
        3 * C) to ``proj`` input (B, H, W, C)."""
        B, H, W, _ = qkv.shape
        N = H * W
        # each (B, N, nH, C')
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).unbind(2)
        if self.use_rel_pos:
            rel_h, rel_w = rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, H,
                                         W)
            q, k = fold_rel_pos_into_qk(
                q, k, rel_h, rel_w, self.scale, token_dim=1)
        if self.contrib_ops:
            out = MultiHeadAttentionFunction.apply(
                q.flatten(2), k.flatten(2), v.flatten(2), self.num_heads,
                self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                scale=self.scale).transpose(1, 2)
        return out.reshape(B, H, W, -1)
