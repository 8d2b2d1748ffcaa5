"""Conversion of raster bands of any dtype to the 0-255 range the model sees.

CLIP / SAM were trained on 8-bit RGB. Remote-sensing rasters are often 12- or
16-bit integers or float reflectance; casting them to ``uint8`` wraps or
clips them (12-bit data comes out near-black, reflectance in [0, 1] becomes
0 / 1). The rule used everywhere in rsrefseg_mm (dataset loader, inference
API, demos):

* ``uint8`` data passes unchanged;
* any other dtype gets a per-band percentile stretch, ``(2, 98)`` by default:
  the ``low``-th and ``high``-th percentiles of the band's *valid* pixels
  (nodata and non-finite values excluded) map to 0 and 255, values outside
  are clipped;
* ``stretch=None`` passes data through that is already in 0-255 (any dtype)
  and raises if it is not.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: Default percentile stretch (low, high) in percent.
DEFAULT_STRETCH: Tuple[float, float] = (2.0, 98.0)

StretchType = Optional[Sequence[float]]
RangeList = List[Tuple[float, float]]


def check_stretch(stretch: StretchType) -> Optional[Tuple[float, float]]:
    """Validate a ``(low, high)`` percentile pair (or ``None``).

    Args:
        stretch (Sequence[float] | None): Percentiles in percent.

    Returns:
        tuple[float, float] | None: The pair as floats.

    Raises:
        ValueError: Unless ``0 <= low < high <= 100``.
    """
    if stretch is None:
        return None
    try:
        low, high = (float(v) for v in stretch)
    except (TypeError, ValueError):
        raise ValueError('stretch must be None or (low, high) percentiles, '
                         f'got {stretch!r}') from None
    if not 0 <= low < high <= 100:
        raise ValueError('stretch percentiles must satisfy 0 <= low < high '
                         f'<= 100, got {stretch!r}')
    return low, high


def to_uint8(data: np.ndarray,
             valid: np.ndarray,
             stretch: StretchType = DEFAULT_STRETCH,
             source: str = 'image') -> Tuple[np.ndarray, Optional[RangeList]]:
    """Bring bands of any dtype to uint8 0-255 (see the module docstring).

    Args:
        data (np.ndarray): (C, H, W) bands, any real dtype.
        valid (np.ndarray): (C, H, W) or (H, W) bool, True where the value
            is data (not nodata). Invalid pixels are excluded from the
            percentiles and set to 0 in the output.
        stretch (Sequence[float] | None): ``(low, high)`` percentiles for
            non-uint8 data, or None to pass 0-255 data through.
        source (str): Name used in error messages (file name).

    Returns:
        tuple: (C, H, W) uint8 array and, when a stretch was applied, the
        per-band ``(value at low %, value at high %)`` ranges, else None.

    Raises:
        ValueError: For a non-real dtype, or with ``stretch=None`` when
            valid values fall outside 0-255.
    """
    stretch = check_stretch(stretch)
    if data.ndim != 3:
        raise ValueError(f'{source}: expected (C, H, W) bands, got shape '
                         f'{data.shape}')
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number) \
            or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f'{source}: cannot display bands of dtype '
                         f'{data.dtype}; expected integers or floats')
    valid = np.broadcast_to(valid, data.shape)
    if np.issubdtype(data.dtype, np.floating):
        valid = valid & np.isfinite(data)
    if data.dtype == np.uint8:
        out = data.copy()
        out[~valid] = 0
        return out, None
    if stretch is None:
        values = data[valid]
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(
                f'{source}: {data.dtype} values span [{values.min()}, '
                f'{values.max()}], outside 0-255, and stretch=None; use a '
                'percentile stretch such as stretch=(2, 98) (--stretch 2 98)')
        out = np.zeros(data.shape, np.uint8)
        out[valid] = np.rint(values).astype(np.uint8)
        return out, None
    low, high = stretch
    ranges: RangeList = []
    for b in range(data.shape[0]):
        values = data[b][valid[b]].astype(np.float64)
        ranges.append((float('nan'),
                       float('nan')) if values.size == 0 else tuple(
                           float(v)
                           for v in np.percentile(values, [low, high])))
    return apply_ranges(data, valid, ranges), ranges


def apply_ranges(data: np.ndarray, valid: np.ndarray,
                 ranges: RangeList) -> np.ndarray:
    """Map each band's ``(lo, hi)`` to 0-255 (the stretch of
    :func:`to_uint8` with its ranges given): the windows of a scene share
    the ranges taken once on the whole scene.

    Args:
        data (np.ndarray): (C, H, W) bands, any real dtype.
        valid (np.ndarray): (C, H, W) or (H, W) bool, True where the value
            is data; invalid pixels get 0.
        ranges (list[tuple[float, float]]): Per band, the values shown as 0
            and 255 (a band with ``lo == hi`` is 255 above the level, else
            0; a NaN range leaves the band 0).

    Returns:
        np.ndarray: (C, H, W) uint8.
    """
    if len(ranges) != data.shape[0]:
        raise ValueError(f'{len(ranges)} stretch ranges for '
                         f'{data.shape[0]} bands')
    valid = np.broadcast_to(valid, data.shape)
    if np.issubdtype(data.dtype, np.floating):
        valid = valid & np.isfinite(data)
    out = np.zeros(data.shape, np.uint8)
    for b, (lo, hi) in enumerate(ranges):
        mask = valid[b]
        values = data[b][mask].astype(np.float64)
        if values.size == 0 or np.isnan(lo):
            continue
        if hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))
            out[b][mask] = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
        else:  # constant band: values above the single level are white
            out[b][mask] = np.where(values > lo, 255, 0).astype(np.uint8)
    return out


def describe_ranges(ranges: RangeList, bands: Sequence[int], dtype: str,
                    stretch: Sequence[float]) -> str:
    """One line naming the stretch applied, for logs and the web demo.

    Args:
        ranges (list[tuple[float, float]]): From :func:`to_uint8`.
        bands (Sequence[int]): The 1-based bands shown as R, G, B.
        dtype (str): Original dtype.
        stretch (Sequence[float]): The percentiles used.

    Returns:
        str: e.g. ``'uint16 bands (3, 2, 1) stretched 2-98 % to 0-255:
        band 3 [312, 1870], ...'``.
    """
    parts = ', '.join(f'band {b} [{lo:.6g}, {hi:.6g}]'
                      for b, (lo, hi) in zip(bands, ranges))
    return (f'{dtype} bands {tuple(bands)} stretched {stretch[0]:g}-'
            f'{stretch[1]:g} % to 0-255: {parts}')
