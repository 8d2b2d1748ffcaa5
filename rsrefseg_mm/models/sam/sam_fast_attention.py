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

On GPUs the default is the folded path in every block (no (N, N) tensor
forward or backward; SDPA's flash kernel), and :class:`SAMFastBlock` runs
the windowed blocks of large grids without stock's padding copies
(:mod:`~rsrefseg_mm.models.sam.sam_window_ops`).

The subclasses add no parameter or buffer and keep the names ``qkv``,
``proj``, ``rel_pos_h`` and ``rel_pos_w``, so official SAM checkpoints load
unchanged and LoRA targets (``qkv``, ``proj``) still match.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (Attention, Block,
                                                     get_rel_pos)

from .sam_window_ops import window_partition_padded, window_unpartition_add

REL_POS_MODES = ('mask', 'chunked', 'augmented')


def check_rel_pos_mode(mode: Optional[str]) -> None:
    """Raise ``ValueError`` unless ``mode`` is None or in REL_POS_MODES."""
    if mode is not None and mode not in REL_POS_MODES:
        raise ValueError(f'rel_pos_mode must be one of {REL_POS_MODES} or '
                         f'None, got {mode!r}')


def default_rel_pos_mode(device_type: str, needs_grad: bool,
                         num_tokens: int, fold_min_tokens: int) -> str:
    """``rel_pos_mode`` that ``rel_pos_mode=None`` resolves to.

    - not CPU (CUDA, ...): ``'augmented'``, in global and windowed blocks,
      training and inference: no (N, N) bias, mask or bias gradient, and
      SDPA may use its flash kernel. Measured on an H200 (RSRefSeg-b, bf16,
      eager, issue 11): inference 125.8 -> 136.6 img/s and LoRA training
      27.9 -> 37.6 img/s (peak 62 -> 37 GiB) against the full mask;
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
    SDPA may pick its flash kernel. The head size ``C + kH + kW`` is
    zero-padded to a multiple of 8 (q', k' and v alike: PyTorch's flash
    kernels want equal q/k/v head sizes that are multiples of 8, and would
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
    B, nH, N, C = q.shape
    kH, kW = rel_h.shape[-1], rel_w.shape[-1]
    extra = kH + kW
    pad = -(C + extra) % 8
    key = torch.arange(N, device=q.device)
    onehot = q.new_zeros(N, extra + pad)
    onehot[key, key // kW] = 1
    onehot[key, kH + key % kW] = 1
    q_parts = [q, rel_h / scale, rel_w / scale]
    if pad:
        q_parts.append(q.new_zeros(B, nH, N, pad))
    q = torch.cat(q_parts, dim=-1)
    k = torch.cat([k, onehot.expand(B, nH, N, extra + pad)], dim=-1)
    v = F.pad(v, (0, extra + pad))
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
    - ``None`` (default): :func:`default_rel_pos_mode`: ``'augmented'`` on
      GPUs; on CPU ``'chunked'`` for inference and, for training,
      ``'augmented'`` when the token grid has at least ``fold_min_tokens``
      tokens (one head's fp32 bias >= 4 MiB: SAM's global blocks at 1024)
      and ``'mask'`` below. Each choice was measured faster and smaller
      than ``'mask'`` (docs/benchmark.md).

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
            return default_rel_pos_mode(q.device.type, needs_grad,
                                        q.shape[2], self.fold_min_tokens)
        check_rel_pos_mode(mode)
        if mode == 'chunked' and needs_grad:
            raise RuntimeError("rel_pos_mode='chunked' reuses its bias "
                               'buffer and cannot be differentiated; use '
                               "'augmented' or 'mask' for training")
        return mode

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of a grid, from ``qkv`` output to ``proj``
        input.

        Args:
            qkv (Tensor): Output of ``self.qkv`` (B, H, W, 3 * C).

        Returns:
            Tensor: Attention output with merged heads (B, H, W, C).
        """
        B, H, W, _ = qkv.shape
        qkv = qkv.reshape(B, H * W, 3, self.num_heads,
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
        return out.view(B, self.num_heads, H, W,
                        -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over a token grid.

        Args:
            x (Tensor): Tokens (B, H, W, C).

        Returns:
            Tensor: Tokens (B, H, W, C).
        """
        return self.proj(self.attend(self.qkv(x)))

    def qkv_bias(self) -> Optional[torch.Tensor]:
        """What ``self.qkv`` returns for a zero token: its bias (3 * C,).

        ``self.qkv`` is an ``nn.Linear`` or a LoRA layer wrapping one as
        ``original_layer`` (its low-rank branch maps 0 to 0).

        Returns:
            Tensor | None: The bias, None when ``qkv`` has none.
        """
        layer = self.qkv
        base = getattr(layer, 'original_layer', layer)
        if not isinstance(base, nn.Linear):
            raise TypeError('SAMFastAttention.qkv_bias: qkv must be an '
                            'nn.Linear or wrap one as `original_layer`, got '
                            f'{type(layer).__name__}')
        return base.bias

    def windowed(self, x: torch.Tensor, window_size: int) -> torch.Tensor:
        """Window attention of a normalised grid, ``qkv`` on real tokens.

        Equals segment-anything's ``window_partition`` (zero padding) ->
        attention -> ``proj``, with ``qkv`` run on the H * W real tokens
        only: a zero padded token's queries, keys and values are the
        ``qkv`` bias, which :func:`window_partition_padded` writes into the
        padded positions. ``proj`` still runs on the padded windows (their
        outputs are dropped by :func:`window_unpartition_add`).

        Args:
            x (Tensor): Normalised tokens (B, H, W, C).
            window_size (int): Window side ``ws``.

        Returns:
            Tensor: ``proj`` output per window (B * nW, ws, ws, C), nW =
            ceil(H / ws) * ceil(W / ws).
        """
        windows = window_partition_padded(self.qkv(x), window_size,
                                          self.qkv_bias())
        return self.proj(self.attend(windows))


class SAMFastBlock(Block):
    """segment-anything ``Block`` whose windowed attention does not pad.

    Global blocks (``window_size == 0``) and grids of fewer than
    ``fused_window_min_tokens`` tokens run segment-anything's
    ``Block.forward`` unchanged. Windowed blocks on larger grids (SAM at
    1024: 64 x 64 tokens, 14 x 14 windows, padded to 70 x 70) take the
    windows as the attention batch, with one pass into and none out of the
    window layout, according to ``window_qkv``:

    - ``'real'``: ``norm1`` -> ``qkv`` on the 4,096 real tokens only -> one
      pass of its 3x wider output into the window layout, padded positions
      set to the ``qkv`` bias (:meth:`SAMFastAttention.windowed`) ->
      attention -> ``proj``;
    - ``'padded'``: ``norm1`` -> one pass into the window layout, padded
      positions zero (:func:`window_partition_padded`) -> ``qkv`` on the
      4,900 padded tokens -> attention -> ``proj``;

    then a residual add that reads the windows in place
    (:func:`window_unpartition_add`) and the MLP. Stock pads, partitions,
    unpartitions and crops (four copies of the tokens). ``'real'``
    (default) saves 16 % of the ``qkv`` GEMM (4,096 of 4,900 rows) but
    copies the 3 * C ``qkv`` output instead of the C-channel tokens; on
    this repository's CPU it was the faster of the two for SAM ViT-B at
    1024 (docs/benchmark.md; ``sam_block_benchmark.py`` compares them on a
    GPU). Both compute the same function and gradients (tests: within 1e-5
    of segment-anything in fp32). Needs a :class:`SAMFastAttention`. Added
    by :func:`enable_fast_attention`.
    """

    #: smallest H * W of the block input that takes the fused windowed
    #: path; smaller grids (the tiny demo's 16 x 16) keep stock's path and
    #: its floating-point summation order, so the demo reproduces
    fused_window_min_tokens: int = 1024
    #: ``'real'`` or ``'padded'``, see the class docstring
    window_qkv: str = 'real'

    def uses_fused_windows(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the fused windowed path for x.

        Args:
            x (Tensor): Block input (B, H, W, C).
        """
        return self.window_size > 0 and \
            x.shape[1] * x.shape[2] >= self.fused_window_min_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer block.

        Args:
            x (Tensor): Tokens (B, H, W, C).

        Returns:
            Tensor: Tokens (B, H, W, C).
        """
        if not self.uses_fused_windows(x):
            return super().forward(x)
        ws = self.window_size
        if self.window_qkv == 'padded':
            windows = self.attn(window_partition_padded(self.norm1(x), ws))
        elif self.window_qkv == 'real':
            windows = self.attn.windowed(self.norm1(x), ws)
        else:
            raise ValueError("SAMFastBlock.window_qkv must be 'padded' or "
                             f"'real', got {self.window_qkv!r}")
        x = window_unpartition_add(x, windows, ws)
        return x + self.mlp(self.norm2(x))


def enable_fast_attention(module: nn.Module) -> int:
    """Switch every SAM ``Attention`` and ``Block`` inside ``module`` to the
    fused ones.

    The class of each instance is swapped in place
    (:class:`SAMFastAttention`, :class:`SAMFastBlock`): parameters,
    buffers, hooks and state-dict keys are untouched (neither adds state),
    so it can run before or after checkpoint loading and LoRA.

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
        elif type(m) is Block:
            m.__class__ = SAMFastBlock
    return n
