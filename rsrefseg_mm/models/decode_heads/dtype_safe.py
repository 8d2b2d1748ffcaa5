"""SAM's random-Fourier positional encodings in a model cast to bf16.

DeepSpeed's ``bf16`` (the RSRefSeg 2 authors' runner) casts the whole model,
buffers included, to bfloat16 and runs it without autocast. The
``PositionEmbeddingRandom`` of segment-anything and of the sam2 package
builds its coordinate grid in float32 and multiplies it with its Gaussian
matrix buffer, now bf16: "expected m1 and m2 to have the same dtype". The
RSRefSeg 2 authors patch their copy of sam2 the same way as here: the
product in the coordinates' dtype (float32), the encoding returned in the
buffer's dtype. In float32 models nothing changes (same operations, same
dtype).
"""
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor


def _dtype_safe_pe_encoding(self, coords: Tensor) -> Tensor:
    """``_pe_encoding`` of ``PositionEmbeddingRandom``, in the dtype of the
    coordinates, returned in the dtype of the Gaussian matrix."""
    coords = 2 * coords - 1
    gaussian = self.positional_encoding_gaussian_matrix
    coords = coords @ gaussian.to(coords.dtype)
    coords = 2 * np.pi * coords
    return torch.cat([torch.sin(coords), torch.cos(coords)],
                     dim=-1).to(gaussian.dtype)


def _pe_classes() -> Tuple[type, ...]:
    """The ``PositionEmbeddingRandom`` classes that are installed."""
    classes = []
    try:
        from segment_anything.modeling.prompt_encoder import \
            PositionEmbeddingRandom
        classes.append(PositionEmbeddingRandom)
    except ImportError:
        pass
    try:
        from sam2.modeling.position_encoding import \
            PositionEmbeddingRandom as SAM2PositionEmbeddingRandom
        classes.append(SAM2PositionEmbeddingRandom)
    except ImportError:
        pass
    return tuple(classes)


_SAFE_CLASSES: Dict[type, type] = {}


def make_position_encodings_dtype_safe(module: nn.Module) -> int:
    """Give every SAM ``PositionEmbeddingRandom`` in ``module`` the
    dtype-safe ``_pe_encoding`` (a subclass of its class, so ``isinstance``
    and the state dict are unchanged).

    Args:
        module (nn.Module): E.g. a decode head's prompt encoder.

    Returns:
        int: How many encodings were changed.
    """
    classes = _pe_classes()
    changed = 0
    for sub in module.modules():
        cls = type(sub)
        if cls in _SAFE_CLASSES.values() or not isinstance(sub, classes):
            continue
        if cls not in _SAFE_CLASSES:
            _SAFE_CLASSES[cls] = type(
                f'DtypeSafe{cls.__name__}', (cls, ),
                dict(
                    _pe_encoding=_dtype_safe_pe_encoding, __module__=__name__))
        sub.__class__ = _SAFE_CLASSES[cls]
        changed += 1
    return changed
