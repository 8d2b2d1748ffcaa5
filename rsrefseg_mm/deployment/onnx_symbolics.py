"""ONNX symbolics for ``torch.onnx.export`` (TorchScript exporter).

- ``aten::_upsample_bicubic2d_aa`` (CLIP's anti-aliased resize), which the
  exporter lacks, registered only inside :func:`onnx_symbolics`;
- :func:`multihead_attention`: ONNX Runtime's fused
  ``com.microsoft.MultiHeadAttention``, the symbolic of
  :class:`~rsrefseg_mm.deployment.onnx_attention.MultiHeadAttentionFunction`.
"""
import contextlib
from typing import Iterator

import torch
from torch.onnx import symbolic_helper

#: ``Resize`` has its ``antialias`` attribute from this opset on.
ANTIALIAS_MIN_OPSET = 18
#: Domain and version of ONNX Runtime's contrib operators.
CONTRIB_DOMAIN, CONTRIB_VERSION = 'com.microsoft', 1


def _bicubic_antialias(g, input, output_size, align_corners, scale_factors):
    """``aten::_upsample_bicubic2d_aa`` (``F.interpolate(mode='bicubic',
    antialias=True)``, CLIP's resize to its input size) as ONNX ``Resize``:
    cubic with ``a = -0.5`` and weights renormalised inside the image, as
    PyTorch's (and PIL's) anti-aliased kernel computes (max abs difference
    0.0015 on 0-255 pixels, 1024 -> 224)."""
    if symbolic_helper._maybe_get_const(align_corners, 'b'):
        raise RuntimeError('ONNX export: anti-aliased bicubic resizing with '
                           'align_corners=True has no ONNX Resize equivalent')
    size_hw = symbolic_helper._maybe_get_const(output_size, 'is')
    shape = g.op('Shape', input)
    batch_channels = g.op('Slice', shape,
                          g.op('Constant', value_t=torch.tensor([0])),
                          g.op('Constant', value_t=torch.tensor([2])))
    sizes = g.op(
        'Concat',
        batch_channels,
        g.op('Constant', value_t=torch.tensor(size_hw, dtype=torch.int64)),
        axis_i=0)
    empty = g.op('Constant', value_t=torch.tensor([], dtype=torch.float32))
    return g.op(
        'Resize',
        input,
        empty,
        empty,
        sizes,
        mode_s='cubic',
        antialias_i=1,
        cubic_coeff_a_f=-0.5,
        exclude_outside_i=1,
        coordinate_transformation_mode_s='half_pixel')


def multihead_attention(g, query, key, value, num_heads: int, scale: float):
    """``com.microsoft.MultiHeadAttention`` (ONNX Runtime's fused
    attention).

    Args:
        g: The exporter's graph context.
        query, key, value: (B, S, nH * D), (B, T, nH * D), (B, T, nH * Dv).
        num_heads (int): nH.
        scale (float): Scale of the q·k product.

    Returns:
        The attention output (B, S, nH * Dv).
    """
    return g.op(
        f'{CONTRIB_DOMAIN}::MultiHeadAttention',
        query,
        key,
        value,
        num_heads_i=num_heads,
        scale_f=scale)


@contextlib.contextmanager
def onnx_symbolics(opset: int) -> Iterator[None]:
    """Register the symbolics of this module for one export.

    Args:
        opset (int): The export's opset (the anti-aliased resize needs
            opset >= :data:`ANTIALIAS_MIN_OPSET`).
    """
    symbolics = []
    if opset >= ANTIALIAS_MIN_OPSET:
        symbolics.append(('aten::_upsample_bicubic2d_aa', _bicubic_antialias))
    for name, fn in symbolics:
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name, _ in symbolics:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
