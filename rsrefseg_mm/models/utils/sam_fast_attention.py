"""SAM image-encoder attention through ``F.scaled_dot_product_attention``.

segment-anything's :class:`~segment_anything.modeling.image_encoder.Attention`
materialises the (N, N) attention matrix in the input dtype, adds the
decomposed relative positions and runs a softmax. :class:`SAMFastAttention`
computes the same function with PyTorch's fused scaled-dot-product attention,
passing the decomposed relative positions as an additive attention mask
(the memory-efficient kernel accepts one). Measured on 2 CPU threads for the
whole SAM ViT-B encoder at 1024: ~18 s stock vs ~9.5 s fused, max abs
difference 4e-6 (design.md, section 7). On one H100 (torch 2.11, bf16
autocast, SAM ViT-B encoder, batch 4 at 1024, random weights): inference
82 -> 48 ms (peak memory 8.7 -> 4.2 GiB); forward + backward with every
encoder weight trainable 204 -> 151 ms (34.6 -> 15.7 GiB); fp32 max abs
difference 5e-4 on outputs of magnitude ~5 (GPU kernels).

The subclass adds no parameter or buffer and keeps the names ``qkv``,
``proj``, ``rel_pos_h`` and ``rel_pos_w``, so official SAM checkpoints load
unchanged and LoRA targets (``qkv``, ``proj``) still match.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor,
                            rel_pos_w: torch.Tensor, height: int,
                            width: int) -> torch.Tensor:
    """Decomposed relative position bias (MViTv2) as an attention mask.

    Same terms as segment-anything's ``add_decomposed_rel_pos`` (queries and
    keys share the spatial size), returned instead of added in place.

    Args:
        q (Tensor): Unscaled queries (B, nH, H*W, C).
        rel_pos_h (Tensor): Relative positions along height (2H-1, C).
        rel_pos_w (Tensor): Relative positions along width (2W-1, C).
        height (int): Token grid height H.
        width (int): Token grid width W.

    Returns:
        Tensor: Additive bias (B, nH, H*W, H*W) in ``q``'s dtype.
    """
    B, nH, _, C = q.shape
    Rh = get_rel_pos(height, height, rel_pos_h).to(q.dtype)  # (H, H, C)
    Rw = get_rel_pos(width, width, rel_pos_w).to(q.dtype)  # (W, W, C)
    r_q = q.reshape(B, nH, height, width, C)
    # einsum returns permuted (non-contiguous) views; the broadcast add
    # would follow their strides and the final reshape would copy the
    # (B,nH,N,N) bias once more (~0.5 s per global block of SAM-B at 1024
    # on 2 CPU threads). Contiguous inputs give a contiguous bias.
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q,
                         Rh).contiguous()  # (B,nH,H,W,kH)
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q,
                         Rw).contiguous()  # (B,nH,H,W,kW)
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # (B,nH,H,W,kH,kW)
    return bias.reshape(B, nH, height * width, height * width)


class SAMFastAttention(Attention):
    """SAM ViT attention computed with ``F.scaled_dot_product_attention``.

    Drop-in replacement of segment-anything's ``Attention`` (same
    constructor, same parameter names); see :func:`enable_fast_attention` to
    convert the blocks of an existing encoder in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over a token grid.

        Args:
            x (Tensor): Tokens (B, H, W, C).

        Returns:
            Tensor: Tokens (B, H, W, C).
        """
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads,
                                  -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nH, H*W, C')
        attn_mask: Optional[torch.Tensor] = None
        if self.use_rel_pos:
            attn_mask = decomposed_rel_pos_bias(q, self.rel_pos_h,
                                                self.rel_pos_w, H, W)
        # default scale of SDPA is head_dim ** -0.5 == self.scale
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.view(B, self.num_heads, H, W,
                       -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(out)


def enable_fast_attention(module: nn.Module) -> int:
    """Switch every SAM ``Attention`` inside ``module`` to the fused one.

    The class of each instance is swapped in place: parameters, buffers,
    hooks and state-dict keys are untouched (:class:`SAMFastAttention` adds
    no state), so it can run before or after checkpoint loading and LoRA.

    Args:
        module (nn.Module): E.g. a SAM ``ImageEncoderViT``.

    Returns:
        int: Number of converted attention layers.
    """
    n = 0
    for m in module.modules():
        if type(m) is Attention:
            m.__class__ = SAMFastAttention
            n += 1
    return n
