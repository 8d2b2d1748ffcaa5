"""SAM image-encoder attention through ``F.scaled_dot_product_attention``.

segment-anything's :class:`~segment_anything.modeling.image_encoder.Attention`
materialises the (N, N) attention matrix in the input dtype, adds the
decomposed relative positions and runs a softmax. :class:`SAMFastAttention`
computes the same function with PyTorch's fused scaled-dot-product attention,
passing the decomposed relative positions as an additive attention mask,
as a mask built one cache-sized slice at a time
(:func:`chunked_rel_pos_attention`, CPU inference) or folded into the
queries and keys (:func:`augmented_rel_pos_attention`, CPU training of
large grids: 1.45x faster RSRefSeg-b training steps at 1024 and 4.0 GiB
less peak memory than the full mask). Measured side by side on this 2-core
CPU for the SAM ViT-B encoder at 1024 (docs/benchmark.md): 38.0 s stock vs
10.0 s fused at 1 thread, max abs difference 4.8e-6; most of stock's time
there is page-faulting its (heads, N, N) fp32 tensors back in, and with an
allocator that keeps freed memory the two are 11.2 s vs 9.1 s. On one H100
(torch 2.11, bf16 autocast, SAM ViT-B encoder, batch 4 at 1024, random
weights): inference 82 -> 48 ms (peak memory 8.7 -> 4.2 GiB); forward +
backward with every encoder weight trainable 204 -> 151 ms (34.6 -> 15.7
GiB); fp32 max abs difference 5e-4 on outputs of magnitude ~5 (GPU kernels).

The subclass adds no parameter or buffer and keeps the names ``qkv``,
``proj``, ``rel_pos_h`` and ``rel_pos_w``, so official SAM checkpoints load
unchanged and LoRA targets (``qkv``, ``proj``) still match.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos

REL_POS_MODES = ('mask', 'chunked', 'augmented')


def check_rel_pos_mode(mode: Optional[str]) -> None:
    """Raise ``ValueError`` unless ``mode`` is None or in REL_POS_MODES."""
    if mode is not None and mode not in REL_POS_MODES:
        raise ValueError(f'rel_pos_mode must be one of {REL_POS_MODES} or '
                         f'None, got {mode!r}')


def decomposed_rel_pos_terms(
        q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
        height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-query height and width terms of the decomposed relative positions.

    The bias of query ``i`` towards key ``(kh, kw)`` is
    ``rel_h[..., i, kh] + rel_w[..., i, kw]`` (segment-anything's
    ``add_decomposed_rel_pos``; queries and keys share the spatial size).

    Args:
        q (Tensor): Unscaled queries (B, nH, H*W, C).
        rel_pos_h (Tensor): Relative positions along height (2H-1, C).
        rel_pos_w (Tensor): Relative positions along width (2W-1, C).
        height (int): Token grid height H.
        width (int): Token grid width W.

    Returns:
        tuple[Tensor, Tensor]: Contiguous ``rel_h`` (B, nH, H*W, H) and
        ``rel_w`` (B, nH, H*W, W) in ``q``'s dtype.
    """
    B, nH, _, C = q.shape
    Rh = get_rel_pos(height, height, rel_pos_h).to(q.dtype)  # (H, H, C)
    Rw = get_rel_pos(width, width, rel_pos_w).to(q.dtype)  # (W, W, C)
    r_q = q.reshape(B, nH, height, width, C)
    # einsum returns permuted (non-contiguous) views; the broadcast add
    # would follow their strides and the final reshape would copy the
    # (B,nH,N,N) bias once more (~0.5 s per global block of SAM-B at 1024
    # on 2 CPU threads). Contiguous terms give a contiguous bias.
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh).contiguous()
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw).contiguous()
    return (rel_h.view(B, nH, height * width, height),
            rel_w.view(B, nH, height * width, width))


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor,
                            rel_pos_w: torch.Tensor, height: int,
                            width: int) -> torch.Tensor:
    """Decomposed relative position bias (MViTv2) as an attention mask.

    Same terms as segment-anything's ``add_decomposed_rel_pos``, returned
    instead of added in place.

    Args:
        q (Tensor): Unscaled queries (B, nH, H*W, C).
        rel_pos_h (Tensor): Relative positions along height (2H-1, C).
        rel_pos_w (Tensor): Relative positions along width (2W-1, C).
        height (int): Token grid height H.
        width (int): Token grid width W.

    Returns:
        Tensor: Additive bias (B, nH, H*W, H*W) in ``q``'s dtype.
    """
    B, nH, N, _ = q.shape
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, height,
                                            width)
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # (B,nH,N,H,W)
    return bias.view(B, nH, N, N)


def chunked_rel_pos_attention(q: torch.Tensor,
                              k: torch.Tensor,
                              v: torch.Tensor,
                              rel_h: torch.Tensor,
                              rel_w: torch.Tensor,
                              max_mask_bytes: int = 4 << 20) -> torch.Tensor:
    """SDPA with the decomposed relative positions, one mask slice at a time.

    Equal to ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``
    with the full bias of :func:`decomposed_rel_pos_bias`, but the
    (B, nH, N, N) bias is never materialised: groups of heads (and, when
    one head's bias exceeds ``max_mask_bytes``, its queries) of each image
    are processed in slices whose bias is written into one reused buffer
    that stays in the CPU cache. The full bias of a global-attention block of
    SAM ViT-B at 1024 is 805 MB per image; writing it to memory and reading
    it back cost more than the attention itself on one CPU core (0.98 s vs
    0.64 s chunked, per block). Inference only: the buffer is overwritten,
    so autograd could not keep it.

    Args:
        q (Tensor): Queries (B, nH, N, C).
        k (Tensor): Keys (B, nH, N, C).
        v (Tensor): Values (B, nH, N, C).
        rel_h (Tensor): Height terms (B, nH, N, kH) with kH * kW == N.
        rel_w (Tensor): Width terms (B, nH, N, kW).
        max_mask_bytes (int): Size of the bias buffer. Default: 4 MiB.

    Returns:
        Tensor: Attention output (B, nH, N, C).
    """
    B, nH, N, C = q.shape
    kH, kW = rel_h.shape[-1], rel_w.shape[-1]
    row_bytes = N * q.element_size()
    # whole heads per slice when one head's bias fits, else query blocks
    heads = max(1, min(nH, max_mask_bytes // (row_bytes * N)))
    queries = N if heads > 1 else max(1, min(N, max_mask_bytes // row_bytes))
    buf = q.new_empty(heads * queries * N)
    # SDPA's CPU kernel returns (B, N, nH, C) memory seen as (B, nH, N, C);
    # the same layout here keeps the caller's token reshape a view
    out = q.new_empty(B, N, nH, v.shape[-1]).transpose(1, 2)
    for b in range(B):
        for h0 in range(0, nH, heads):
            h = slice(h0, min(h0 + heads, nH))
            for q0 in range(0, N, queries):
                i = slice(q0, min(q0 + queries, N))
                nh, nq = h.stop - h.start, i.stop - i.start
                mask = buf[:nh * nq * N].view(nh, nq, kH, kW)
                torch.add(
                    rel_h[b, h, i, :, None], rel_w[b, h, i, None, :],
                    out=mask)
                out[b, h, i] = F.scaled_dot_product_attention(
                    q[b, h, i], k[b, h], v[b, h],
                    attn_mask=mask.view(nh, nq, N))
    return out


def augmented_rel_pos_attention(q: torch.Tensor, k: torch.Tensor,
                                v: torch.Tensor, rel_h: torch.Tensor,
                                rel_w: torch.Tensor,
                                scale: float) -> torch.Tensor:
    """SDPA with the decomposed relative positions folded into q and k.

    ``q·k * scale + rel_h[i, kh] + rel_w[i, kw]`` equals ``q'·k' * scale``
    with ``q' = [q, rel_h / scale, rel_w / scale]`` and
    ``k' = [k, onehot(kh), onehot(kw)]``, so attention needs no mask at all:
    no (N, N) bias is built, saved for backward or given a gradient, and
    SDPA may pick its flash kernel. ``v`` is zero-padded to the same head
    size (PyTorch's flash kernels want equal q/k/v head sizes) and the
    padding is sliced off the output. The q·k and attention·v products get
    ``kH + kW`` more channels (64 -> 192 for a global block of SAM at 1024).
    Measured for one global block of SAM ViT-B at 1024 on one CPU core,
    forward + backward: 5.47 s and 3.5 GiB peak RSS with the full bias as
    mask, 4.71 s and 1.3 GiB here.

    Args:
        q (Tensor): Queries (B, nH, N, C).
        k (Tensor): Keys (B, nH, N, C).
        v (Tensor): Values (B, nH, N, C).
        rel_h (Tensor): Height terms (B, nH, N, kH) with kH * kW == N.
        rel_w (Tensor): Width terms (B, nH, N, kW).
        scale (float): Scale of the q·k product.

    Returns:
        Tensor: Attention output (B, nH, N, C), a view into (B, nH, N,
        C + kH + kW).
    """
    B, nH, N, C = q.shape
    kH, kW = rel_h.shape[-1], rel_w.shape[-1]
    key = torch.arange(N, device=q.device)
    onehot = q.new_zeros(N, kH + kW)
    onehot[key, key // kW] = 1
    onehot[key, kH + key % kW] = 1
    q = torch.cat([q, rel_h / scale, rel_w / scale], dim=-1)
    k = torch.cat([k, onehot.expand(B, nH, N, kH + kW)], dim=-1)
    v = F.pad(v, (0, kH + kW))
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out[..., :C]


class SAMFastAttention(Attention):
    """SAM ViT attention computed with ``F.scaled_dot_product_attention``.

    Drop-in replacement of segment-anything's ``Attention`` (same
    constructor, same parameter names); see :func:`enable_fast_attention` to
    convert the blocks of an existing encoder in place.

    How the relative positions reach SDPA is ``rel_pos_mode``:

    - ``'mask'``: the full (B, nH, N, N) bias as ``attn_mask``;
    - ``'chunked'``: :func:`chunked_rel_pos_attention`, the bias one
      cache-sized slice (``max_mask_bytes``) at a time; inference only;
    - ``'augmented'``: :func:`augmented_rel_pos_attention`, the bias folded
      into q and k, no mask;
    - ``None`` (default): ``'chunked'`` for CPU inference; for CPU
      training ``'augmented'`` when the token grid has at least
      ``fold_min_tokens`` tokens (one head's fp32 bias >= 4 MiB: SAM's
      global blocks at 1024) and ``'mask'`` below, where the bias is small
      and folding would only add q·k channels; ``'mask'`` on other devices,
      whose figures were measured with it. Both CPU choices were measured
      faster and smaller than ``'mask'`` (docs/benchmark.md).

    All modes compute the same function (tests: within 1e-5 in fp32,
    gradients included).
    """

    #: see the class docstring; class attributes because instances are
    #: converted in place (set per instance to override, e.g. through
    #: ``SAMPromptHead(rel_pos_mode=...)``)
    rel_pos_mode: Optional[str] = None
    #: bias buffer of the ``'chunked'`` mode
    max_mask_bytes: int = 4 << 20
    #: smallest token count for which CPU training folds the bias
    fold_min_tokens: int = 1024

    def _rel_pos_mode(self, q: torch.Tensor) -> str:
        needs_grad = torch.is_grad_enabled() and q.requires_grad
        mode = self.rel_pos_mode
        if mode is None:
            if q.device.type != 'cpu':
                return 'mask'
            if not needs_grad:
                return 'chunked'
            return 'augmented' if q.shape[2] >= self.fold_min_tokens \
                else 'mask'
        check_rel_pos_mode(mode)
        if mode == 'chunked' and needs_grad:
            raise RuntimeError("rel_pos_mode='chunked' reuses its bias "
                               'buffer and cannot be differentiated; use '
                               "'augmented' or 'mask' for training")
        return mode

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
        # default scale of SDPA is head_dim ** -0.5 == self.scale
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            mode = self._rel_pos_mode(q)
            if mode == 'mask':
                attn_mask = decomposed_rel_pos_bias(q, self.rel_pos_h,
                                                    self.rel_pos_w, H, W)
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=attn_mask)
            else:
                rel_h, rel_w = decomposed_rel_pos_terms(
                    q, self.rel_pos_h, self.rel_pos_w, H, W)
                if mode == 'chunked':
                    out = chunked_rel_pos_attention(q, k, v, rel_h, rel_w,
                                                    self.max_mask_bytes)
                else:
                    out = augmented_rel_pos_attention(
                        q, k, v, rel_h, rel_w, self.scale)
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
