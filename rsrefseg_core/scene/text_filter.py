"""The global text filter of RSRefSeg's prompter on stored window
embeddings, for gating a scene's windows before the decoders run.

The prompter's global filter (``TextFilterNeck``) is
``sigmoid(s * cos(V, t) + b)`` over the image tower's patch features ``V``
(``img_feats``, kept in a scene's window embeddings) and the expression's
sentence feature ``t``. Its largest logit over a window says whether
anything in the window resembles the expression; it costs a dot product
per patch, against the prompter and SAM's decoder per window.
"""
from typing import List

import numpy as np

from .embeddings import Arrays


def window_filter_max(encodings: List[Arrays], text_global: np.ndarray,
                      scale: float, bias: float) -> np.ndarray:
    """The largest global-filter logit of each window.

    Args:
        encodings (list[dict]): Window embeddings with ``img_feats``
            (D, h, w).
        text_global (np.ndarray): (D,) sentence feature.
        scale (float): The filters' ``s``.
        bias (float): The filters' ``b``.

    Returns:
        np.ndarray: (n,) float32, ``max_hw(s * cos(V, t) + b)``; the
        cosine as ``F.normalize`` takes it (norms below 1e-12 clamped).
    """
    if any('img_feats' not in e for e in encodings):
        raise KeyError('the window embeddings hold no img_feats (the image '
                       'tower\'s patch features the text filter reads)')
    feats = np.stack([e['img_feats'] for e in encodings]).astype(np.float32)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    text = np.asarray(text_global, np.float32)
    text = text / max(float(np.linalg.norm(text)), 1e-12)
    cos = np.einsum('ndhw,d->nhw', feats, text)
    return (scale * cos + bias).reshape(len(encodings), -1).max(1)
