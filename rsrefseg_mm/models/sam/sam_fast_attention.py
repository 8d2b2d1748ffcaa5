"""SAM image-encoder attention through ``F.scaled_dot_product_attention``.

segment-anything's :class:`~segment_anything.modeling.image_encoder.Attention`
materialises the (N, N) attention matrix in the input dtype, adds the
decomposed relative positions and runs a softmax. :class:`SAMFastAttention`
computes the same function with PyTorch's fused scaled-dot-product attention,
the relative positions passed as an additive mask, as a mask built one
cache-sized slice at a time, or folded into the queries and keys
(:mod:`~rsrefseg_mm.models.sam.rel_pos_attention`); :class:`SAMFastBlock`
runs the windowed blocks of large grids without stock's padding copies
(:mod:`~rsrefseg_mm.models.sam.sam_window_ops`). Speed and memory against
stock segment-anything, CPU and GPU, with the commands: docs/benchmark.md.

The subclasses add no parameter or buffer and keep the names ``qkv``,
``proj``, ``rel_pos_h`` and ``rel_pos_w``, so official SAM checkpoints load
unchanged and LoRA targets (``qkv``, ``proj``) still match.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, Block

from .rel_pos_attention import REL_POS_MODES  # noqa: F401 (re-exported)
from .rel_pos_attention import (augmented_rel_pos_attention,
                                check_rel_pos_mode, chunked_rel_pos_attention,
                                decomposed_rel_pos_bias,
                                decomposed_rel_pos_terms, default_rel_pos_mode)
from .sam_window_ops import window_partition_padded, window_unpartition_add


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
            return default_rel_pos_mode(q.device.type, needs_grad, q.shape[2],
                                        self.fold_min_tokens)
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
        out = self.attention(q, k, v, H, W)
        return out.view(B, self.num_heads, H, W,
                        -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  height: int, width: int) -> torch.Tensor:
        """Scaled dot-product attention with the relative positions.

        Args:
            q (Tensor): Queries (B, nH, N, C'), N = height * width.
            k (Tensor): Keys (B, nH, N, C').
            v (Tensor): Values (B, nH, N, C').
            height (int): Token grid height.
            width (int): Token grid width.

        Returns:
            Tensor: (B, nH, N, C'), possibly a strided view.
        """
        # default scale of SDPA is head_dim ** -0.5 == self.scale
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        mode = self._rel_pos_mode(q)
        if mode == 'mask':
            attn_mask = decomposed_rel_pos_bias(q, self.rel_pos_h,
                                                self.rel_pos_w, height, width)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        rel_h, rel_w = decomposed_rel_pos_terms(q, self.rel_pos_h,
                                                self.rel_pos_w, height, width)
        if mode == 'chunked':
            return chunked_rel_pos_attention(q, k, v, rel_h, rel_w,
                                             self.max_mask_bytes)
        return augmented_rel_pos_attention(q, k, v, rel_h, rel_w, self.scale)

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
        windows = window_partition_padded(
            self.qkv(x), window_size, self.qkv_bias())
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
    copies the 3 * C ``qkv`` output instead of the C-channel tokens
    (``.dev_scripts/sam_block_benchmark.py`` compares the two;
    figures in docs/benchmark.md). Both compute the same function and
    gradients (tests: within 1e-5 of segment-anything in fp32). Needs a
    :class:`SAMFastAttention`. Added by :func:`enable_fast_attention`.
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
