"""The decomposed relative positions of SAM's attention, three ways into
``F.scaled_dot_product_attention``: a full additive mask (``'mask'``), the
mask built one cache-sized slice at a time (``'chunked'``, CPU inference) or
folded into the queries and keys (``'augmented'``: no (N, N) tensor forward
or backward, SDPA's flash kernel on GPUs; CPU training of large grids)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos

REL_POS_MODES = ('mask', 'chunked', 'augmented')


def check_rel_pos_mode(mode: Optional[str]) -> None:
    """Raise ``ValueError`` unless ``mode`` is None or in REL_POS_MODES."""
    if mode is not None and mode not in REL_POS_MODES:
        raise ValueError(f'rel_pos_mode must be one of {REL_POS_MODES} or '
                         f'None, got {mode!r}')


def default_rel_pos_mode(device_type: str, needs_grad: bool, num_tokens: int,
                         fold_min_tokens: int) -> str:
    """``rel_pos_mode`` that ``rel_pos_mode=None`` resolves to.

    - not CPU (CUDA, ...): ``'augmented'``, in global and windowed blocks,
      training and inference: no (N, N) bias, mask or bias gradient, and
      SDPA may use its flash kernel (GPU figures: docs/benchmark.md);
    - CPU inference: ``'chunked'`` (mask slices in a cache-sized buffer);
    - CPU training: ``'augmented'`` from ``fold_min_tokens`` tokens on,
      ``'mask'`` below (small grids, e.g. the tiny demo's 16 x 16, keep the
      full mask: folding changes the rounding of chaotic runs for nothing).

    Args:
        device_type (str): ``q.device.type``.
        needs_grad (bool): Whether autograd records the attention.
        num_tokens (int): Tokens per attention sequence (H * W).
        fold_min_tokens (int): CPU training threshold.

    Returns:
        str: One of :data:`REL_POS_MODES`.
    """
    if device_type != 'cpu':
        return 'augmented'
    if not needs_grad:
        return 'chunked'
    return 'augmented' if num_tokens >= fold_min_tokens else 'mask'


def decomposed_rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor,
                             rel_pos_w: torch.Tensor, height: int,
                             width: int) -> Tuple[torch.Tensor, torch.Tensor]:
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
    return (rel_h.view(B, nH, height * width,
                       height), rel_w.view(B, nH, height * width, width))


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
                    rel_h[b, h, i, :, None], rel_w[b, h, i, None, :], out=mask)
                out[b, h, i] = F.scaled_dot_product_attention(
                    q[b, h, i],
                    k[b, h],
                    v[b, h],
                    attn_mask=mask.view(nh, nq, N))
    return out


def fold_rel_pos_into_qk(
        q: torch.Tensor,
        k: torch.Tensor,
        rel_h: torch.Tensor,
        rel_w: torch.Tensor,
        scale: float,
        multiple: int = 8,
        token_dim: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys whose scaled product carries the relative positions.

    ``q·k * scale + rel_h[i, kh] + rel_w[i, kw]`` equals ``q'·k' * scale``
    with ``q' = [q, rel_h / scale, rel_w / scale]`` and
    ``k' = [k, onehot(kh), onehot(kw)]``; both are zero-padded to a head
    size that is a multiple of ``multiple``.

    Args:
        q (Tensor): Queries (B, nH, N, C), or (B, N, nH, C) with
            ``token_dim=1``.
        k (Tensor): Keys, as ``q``.
        rel_h (Tensor): Height terms (B, nH, N, kH) with kH * kW == N (or
            (B, N, nH, kH)).
        rel_w (Tensor): Width terms (B, nH, N, kW) (or (B, N, nH, kW)).
        scale (float): Scale of the q·k product.
        multiple (int): Head size granularity. Defaults to 8.
        token_dim (int): Token axis N of all four. Defaults to 2.

    Returns:
        tuple[Tensor, Tensor]: ``q'`` and ``k'``, head size D = C + kH + kW
        rounded up to a multiple of ``multiple``.
    """
    N, C = q.shape[token_dim], q.shape[-1]
    kH, kW = rel_h.shape[-1], rel_w.shape[-1]
    extra = kH + kW
    pad = -(C + extra) % multiple
    key = torch.arange(N, device=q.device)
    onehot = q.new_zeros(N, extra + pad)
    onehot[key, key // kW] = 1
    onehot[key, kH + key % kW] = 1
    shape = [1] * q.dim()
    shape[token_dim], shape[-1] = N, extra + pad
    q_parts = [q, rel_h / scale, rel_w / scale]
    if pad:
        q_parts.append(q.new_zeros(*q.shape[:-1], pad))
    q = torch.cat(q_parts, dim=-1)
    k = torch.cat([k, onehot.view(shape).expand(*k.shape[:-1], -1)], dim=-1)
    return q, k


def augmented_rel_pos_attention(q: torch.Tensor, k: torch.Tensor,
                                v: torch.Tensor, rel_h: torch.Tensor,
                                rel_w: torch.Tensor,
                                scale: float) -> torch.Tensor:
    """SDPA with the decomposed relative positions folded into q and k
    (:func:`fold_rel_pos_into_qk`).

    Attention then needs no mask at all: no (N, N) bias is built, saved for
    backward or given a gradient, and SDPA may pick its flash kernel. v is
    zero-padded to the head size of q' and k' too (PyTorch's flash kernels
    want equal q/k/v head sizes that are multiples of 8, and would
    otherwise pad q, k and v once more themselves); the padding is sliced
    off the output. The q·k and attention·v products get ``kH + kW`` (+
    padding) more channels: 64 -> 192 for a global block of SAM at 1024,
    64 -> 96 for its 14 x 14 windows. Measured for one global block of SAM
    ViT-B at 1024 on one CPU core, forward + backward: 5.47 s and 3.5 GiB
    peak RSS with the full bias as mask, 4.71 s and 1.3 GiB here.

    Args:
        q (Tensor): Queries (B, nH, N, C).
        k (Tensor): Keys (B, nH, N, C).
        v (Tensor): Values (B, nH, N, C).
        rel_h (Tensor): Height terms (B, nH, N, kH) with kH * kW == N.
        rel_w (Tensor): Width terms (B, nH, N, kW).
        scale (float): Scale of the q·k product.

    Returns:
        Tensor: Attention output (B, nH, N, C), a view into (B, nH, N, D),
        D = C + kH + kW rounded up to a multiple of 8.
    """
    C = q.shape[-1]
    q, k = fold_rel_pos_into_qk(q, k, rel_h, rel_w, scale)
    v = F.pad(v, (0, q.shape[-1] - C))
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out[..., :C]
