"""Stand-in ``mmcv.ops`` for machines where mmcv's compiled ops do not load.

Only for the benchmark scripts (``benchmark.py`` / ``gpu_benchmark.py``)
on a lent GPU machine that gets mmcv as pure-python files (``gpu_site/``,
built by ``make_gpu_site.sh``): mmcv's ``_ext`` is compiled for another
Python/torch and cannot load there, yet mmseg imports ``mmcv.ops`` at import
time (``point_sample``, ``sigmoid_focal_loss``). RSRefSeg uses no mmcv op.

:func:`install` registers a module ``mmcv.ops`` whose ``point_sample`` is
mmcv's own pure-PyTorch version (``F.grid_sample``) and whose every other
name is a stub that raises ``RuntimeError`` when called. Enabled by
``RSREFSEG_MMCV_OPS_SHIM=1`` in the benchmark scripts; never imported by the
``rsrefseg_mm`` package. Do not use it for training or testing runs.
"""
import sys
import types

import torch
import torch.nn.functional as F

SHIM_NAME = 'rsrefseg-mmcv-ops-shim'


def point_sample(input: torch.Tensor,
                 points: torch.Tensor,
                 align_corners: bool = False,
                 **kwargs) -> torch.Tensor:
    """``mmcv.ops.point_sample``: bilinear samples at [0, 1] coordinates.

    Args:
        input (Tensor): Feature map (N, C, H, W).
        points (Tensor): (N, P, 2) or (N, Hgrid, Wgrid, 2) with (x, y) in
            [0, 1].
        align_corners (bool): As in ``F.grid_sample``.

    Returns:
        Tensor: (N, C, P) or (N, C, Hgrid, Wgrid).
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    out = F.grid_sample(
        input, points * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


def _stub(name: str):

    class Unavailable:
        """Placeholder of an mmcv op that needs the compiled ``mmcv._ext``."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                f'mmcv.ops.{name} is not available: {SHIM_NAME} replaces '
                'mmcv.ops (no compiled mmcv._ext on this machine)')

    Unavailable.__name__ = Unavailable.__qualname__ = name
    return Unavailable


def _getattr(name: str):
    if name.startswith('__'):
        raise AttributeError(name)
    return _stub(name)


def install() -> types.ModuleType:
    """Register the stand-in as ``mmcv.ops`` (idempotent).

    Returns:
        module: The installed ``mmcv.ops``.
    """
    current = sys.modules.get('mmcv.ops')
    if current is not None and getattr(current, '__shim__', None) == \
            SHIM_NAME:
        return current
    import mmcv
    ops = types.ModuleType('mmcv.ops', __doc__)
    ops.__shim__ = SHIM_NAME
    ops.point_sample = point_sample
    ops.sigmoid_focal_loss = _stub('sigmoid_focal_loss')
    ops.__getattr__ = _getattr
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    return ops
