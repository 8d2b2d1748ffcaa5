"""A small picture of a whole-scene prediction: the scene decimated to a
longest side of at most :data:`OVERVIEW_SIZE` pixels with the mask drawn on
it, both read decimated from their files (never at the scene's size)."""
import warnings
from typing import Optional, Sequence

import cv2
import numpy as np

from ..geo import DEFAULT_STRETCH, read_image
from ..geo.reader import require_rasterio
from ..geo.stretch import StretchType
from .captions import add_caption
from .overlays import FILL_ALPHA, PRED_COLOR, draw_mask_overlay

#: Longest side of the overview, in pixels.
OVERVIEW_SIZE = 2048


def read_mask_decimated(mask_path: str, shape: Sequence[int]) -> np.ndarray:
    """A mask GeoTIFF (1 target, 0 background, 255 nodata) read at
    ``shape`` with nearest resampling.

    Args:
        mask_path (str): The mask written by the scene predictor.
        shape (Sequence[int]): ``(h, w)`` to read it at.

    Returns:
        np.ndarray: (h, w) uint8.
    """
    rasterio = require_rasterio(mask_path)
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(mask_path) as src:
            return src.read(
                1,
                out_shape=(int(shape[0]), int(shape[1])),
                resampling=Resampling.nearest)


def scene_overview(image_path: str,
                   mask_path: str,
                   text: Optional[str] = None,
                   bands: Optional[Sequence[int]] = None,
                   stretch: StretchType = DEFAULT_STRETCH,
                   max_size: int = OVERVIEW_SIZE,
                   alpha: float = FILL_ALPHA) -> np.ndarray:
    """The scene with its predicted mask, small enough to look at.

    The scene is read with :func:`rsrefseg_core.geo.read_image` decimated
    to a longest side of ``max_size`` (8-bit photos, which it decodes
    whole, are shrunk afterwards), the mask GeoTIFF is read at that size,
    and the mask is drawn as the demos draw it (translucent fill, contour,
    nodata dimmed), captioned with the expression.

    Args:
        image_path (str): The scene file.
        mask_path (str): Its mask GeoTIFF (on the scene's grid).
        text (str, optional): Caption (the expression).
        bands (Sequence[int], optional): 1-based bands shown as R, G, B.
        stretch: Percentile stretch of non-8-bit data.
        max_size (int): Longest side of the overview.
        alpha (float): Opacity of the mask fill.

    Returns:
        np.ndarray: (h + caption, w, 3) uint8 RGB, ``max(h, w) <=
        max_size``.
    """
    image = read_image(image_path, bands, stretch, max_size=max_size)
    rgb = np.ascontiguousarray(image.img[..., ::-1])
    h, w = rgb.shape[:2]
    if max(h, w) > max_size:
        scale = max_size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    mask = read_mask_decimated(mask_path, (h, w))
    out = draw_mask_overlay(rgb, mask, PRED_COLOR, alpha)
    return out if text is None else add_caption(out, text)
