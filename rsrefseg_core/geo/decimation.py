"""Decimated reads: a large raster read at the resolution the model needs.

The model looks at a fixed input size (128 px for the tiny demo model, 1024
for RSRefSeg-b / -l), so reading a 16,384 x 16,384 scene pixel for pixel
only to shrink it afterwards costs gigabytes for nothing. Here the scene is
decimated while it is read (rasterio's ``out_shape``): GDAL reads from the
file's overviews when it has them, and averages the full-resolution blocks
otherwise, a block at a time, under a bounded block cache. Memory then
depends on the working size, not on the scene.

Each working pixel is the mean of the *valid* pixels it covers (GDAL's
``average`` resampling leaves out nodata and masked pixels), and is nodata
where none of them holds data (for files with a nodata value; with an
internal mask or an alpha band, where the share of valid pixels rounds to
0 of 255).
"""
import os
from typing import Optional, Sequence, Tuple

import numpy as np

#: Resampling of decimated reads (reflectance / radiance: the mean).
DECIMATION_RESAMPLING = 'average'
#: GDAL block cache (bytes) while a raster is read, unless the environment
#: sets ``GDAL_CACHEMAX``: a read streams through it once, so a larger cache
#: only holds memory (GDAL's default is 5 % of the machine's RAM).
READ_CACHE_BYTES = 64 * 2**20

Shape = Tuple[int, int]


def decimated_shape(height: int, width: int,
                    max_size: Optional[int]) -> Optional[Shape]:
    """The working shape of a ``height`` x ``width`` read.

    Args:
        height (int): Rows at the file's resolution.
        width (int): Columns at the file's resolution.
        max_size (int, optional): Longest side allowed; None reads at the
            file's resolution.

    Returns:
        tuple[int, int] | None: ``(h, w)`` with the aspect ratio kept and
        ``max(h, w) == max_size``, or None when the read already fits (no
        decimation).

    Raises:
        ValueError: For ``max_size < 1``.
    """
    if max_size is None:
        return None
    if int(max_size) < 1:
        raise ValueError(f'max_size must be >= 1, got {max_size}')
    longest = max(height, width)
    if longest <= max_size:
        return None
    scale = max_size / longest
    return (max(1,
                int(round(height * scale))), max(1, int(round(width * scale))))


def scale_transform(transform, native_shape: Shape, shape: Shape):
    """The geotransform of a decimated grid covering the same extent.

    Args:
        transform (affine.Affine): Transform of the native grid.
        native_shape (tuple[int, int]): ``(H, W)`` of the native grid.
        shape (tuple[int, int]): ``(h, w)`` of the decimated grid.

    Returns:
        affine.Affine: Pixels ``W / w`` by ``H / h`` times larger, with the
        same top-left corner (and so the same bottom-right corner).
    """
    from affine import Affine
    (nh, nw), (h, w) = native_shape, shape
    sx, sy = nw / w, nh / h
    a, b, c, d, e, f = transform[:6]
    return Affine(a * sx, b * sy, c, d * sx, e * sy, f)


def read_cache_env() -> dict:
    """``rasterio.Env`` options bounding GDAL's block cache for a read
    (empty when the user set ``GDAL_CACHEMAX``)."""
    import rasterio.env
    if 'GDAL_CACHEMAX' in os.environ or (rasterio.env.hasenv()
                                         and 'GDAL_CACHEMAX'
                                         in rasterio.env.getenv()):
        return {}
    return dict(GDAL_CACHEMAX=READ_CACHE_BYTES)


def read_bands(
        src,
        bands: Sequence[int],
        window=None,
        out_shape: Optional[Shape] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Read bands and their validity, at the file's resolution or decimated.

    Args:
        src (rasterio.io.DatasetReader): An open raster.
        bands (Sequence[int]): 1-based band numbers.
        window (rasterio.windows.Window, optional): Region to read.
        out_shape (tuple[int, int], optional): ``(h, w)`` to decimate the
            region to (see the module docstring); None reads it as is.

    Returns:
        tuple[np.ndarray, np.ndarray]: (C, h, w) data in the file's dtype
        and (C, h, w) bool validity (True = data).
    """
    from rasterio.enums import MaskFlags, Resampling
    bands = list(bands)
    if out_shape is None:
        data = src.read(bands, window=window)
        return data, src.read_masks(bands, window=window) > 0
    resampling = Resampling[DECIMATION_RESAMPLING]
    shape = (len(bands), ) + tuple(out_shape)
    data = src.read(
        bands, window=window, out_shape=shape, resampling=resampling)
    flags = [src.mask_flag_enums[b - 1] for b in bands]
    if all(MaskFlags.all_valid in f for f in flags):
        return data, np.ones(shape, bool)
    if all(f == [MaskFlags.nodata] for f in flags):
        # the average leaves nodata out; a pixel with no valid input gets
        # the nodata value (the decimated mask of such a band says valid
        # everywhere, so it is derived from the values)
        valid = np.empty(shape, bool)
        for i, b in enumerate(bands):
            nodata = src.nodatavals[b - 1]
            valid[i] = ~np.isnan(data[i]) if np.isnan(nodata) else \
                data[i] != np.asarray(nodata).astype(data.dtype)
        return data, valid
    masks = src.read_masks(
        bands, window=window, out_shape=shape, resampling=resampling)
    return data, masks > 0
