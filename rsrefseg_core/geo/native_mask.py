"""The mask GeoTIFF at the input file's resolution, written block by block.

A decimated read (:mod:`.decimation`) gives the prediction on the working
grid. On request the mask GeoTIFF is written on the file's own grid instead:
the foreground probability is upsampled bilinearly (half-pixel centres, as
mmseg upsamples the model's output to the image) and thresholded, and the
file's nodata is read again at its resolution. Both happen one strip of
tiles at a time, so memory is bounded by a strip, not by the scene.
"""
import warnings
from typing import Optional, Tuple

import numpy as np

from .decimation import read_cache_env
from .export import (MASK_BLOCK, MASK_NODATA, MASK_TARGET, describe_mask_band,
                     mask_profile, write_qgis_style)
from .raster_image import RasterImage
from .reader import require_rasterio

#: Columns of a chunk (whole tiles of the mask GeoTIFF).
CHUNK_COLS = 16 * MASK_BLOCK


def source_coords(start: int, stop: int, in_size: int,
                  out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of output pixels ``start:stop`` along one axis.

    Same rule as ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False)``: pixel centres at half integers, source
    positions below 0 clamped to 0, the last input pixel repeated.

    Args:
        start (int): First output pixel.
        stop (int): End (exclusive).
        in_size (int): Input pixels along the axis.
        out_size (int): Output pixels along the axis.

    Returns:
        tuple: ``(i0, i1, frac)``, (stop - start,) arrays: the two input
        pixels and the weight of ``i1``.
    """
    pos = (np.arange(start, stop, dtype=np.float64) + 0.5) * (in_size /
                                                              out_size) - 0.5
    pos = np.maximum(pos, 0.0)
    i0 = np.minimum(pos.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def upsample_bilinear(prob: np.ndarray, rows: Tuple[int, int],
                      cols: Tuple[int, int],
                      out_shape: Tuple[int, int]) -> np.ndarray:
    """A block of the bilinear upsampling of ``prob`` to ``out_shape``.

    Args:
        prob (np.ndarray): (h, w) float map.
        rows (tuple[int, int]): ``(start, stop)`` output rows.
        cols (tuple[int, int]): ``(start, stop)`` output columns.
        out_shape (tuple[int, int]): ``(H, W)`` of the whole output.

    Returns:
        np.ndarray: (stop - start rows, stop - start columns) float32.
    """
    prob = np.asarray(prob, dtype=np.float32)
    y0, y1, fy = source_coords(*rows, prob.shape[0], out_shape[0])
    x0, x1, fx = source_coords(*cols, prob.shape[1], out_shape[1])
    top = prob[np.ix_(y0, x0)] * (1 - fx) + prob[np.ix_(y0, x1)] * fx
    bottom = prob[np.ix_(y1, x0)] * (1 - fx) + prob[np.ix_(y1, x1)] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def write_native_mask_geotiff(path: str,
                              probability: np.ndarray,
                              threshold: float,
                              image: RasterImage,
                              text: Optional[str] = None) -> str:
    """Write the mask of a decimated read on the input file's grid.

    Values, colour table and QGIS style as
    :func:`~rsrefseg_core.geo.write_mask_geotiff`: 1 where the upsampled
    probability exceeds ``threshold``, 0 elsewhere, 255 where none of the
    shown bands holds data in the file (nodata value, mask, NaN).

    Args:
        path (str): Output ``.tif`` path.
        probability (np.ndarray): (h, w) foreground probability on the
            working grid (the result's ``seg_logits``).
        threshold (float): The decode head's threshold.
        image (RasterImage): The decimated read (``path``,
            ``native_shape``, ``native_transform``, ``window``, ``bands``).
        text (str, optional): The expression, stored as a tag.

    Returns:
        str: ``path``.

    Raises:
        ValueError: ``image`` is not a decimated read of a file.
    """
    if not image.decimated:
        raise ValueError(f'{image.source} was read at its own resolution; '
                         'write its mask with write_mask_geotiff')
    if image.path is None:
        raise ValueError(f'{image.source}: a mask at the file\'s resolution '
                         'needs the file (it was read from bytes)')
    rasterio = require_rasterio(path)
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window
    height, width = image.native_shape
    col_off, row_off = (image.window or (0, 0))[:2]
    bands = list(image.bands)
    floating = np.issubdtype(np.dtype(image.dtype), np.floating)
    prob = np.asarray(probability, dtype=np.float32)
    profile = mask_profile(height, width, image.native_transform, image.crs)
    with warnings.catch_warnings(), rasterio.Env(**read_cache_env()):
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(image.path) as src, \
                rasterio.open(path, 'w', **profile) as dst:
            for r0 in range(0, height, MASK_BLOCK):
                r1 = min(r0 + MASK_BLOCK, height)
                for c0 in range(0, width, CHUNK_COLS):
                    c1 = min(c0 + CHUNK_COLS, width)
                    win = Window(col_off + c0, row_off + r0, c1 - c0, r1 - r0)
                    valid = src.read_masks(bands, window=win) > 0
                    if floating:
                        valid &= np.isfinite(src.read(bands, window=win))
                    fg = upsample_bilinear(prob, (r0, r1), (c0, c1),
                                           (height, width)) > threshold
                    out = np.where(
                        valid.any(axis=0),
                        fg.astype(np.uint8) * MASK_TARGET,
                        MASK_NODATA).astype(np.uint8)
                    dst.write(out, 1, window=Window(c0, r0, c1 - c0, r1 - r0))
            describe_mask_band(dst, text)
    write_qgis_style(path)
    return path
