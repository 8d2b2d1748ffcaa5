"""Region of interest: a crop of a large scene, in pixel or map coordinates.

Referring expressions describe the whole image, so a large scene is not
tiled: the user crops the region the expression talks about and the outputs
are georeferenced to that crop.
"""
import logging
import math
from typing import Optional, Sequence, Tuple

#: (col_off, row_off, width, height) in pixels of the full image.
PixelWindow = Tuple[int, int, int, int]
#: Rounding tolerance (pixels) when map bounds fall on pixel edges.
EDGE_TOLERANCE = 1e-6


def parse_roi(roi: Sequence[float],
              source: str = 'image') -> Tuple[float, float, float, float]:
    """Validate ``(xmin, ymin, xmax, ymax)``.

    Args:
        roi (Sequence[float]): Four numbers. In pixels: ``COL0 ROW0 COL1
            ROW1`` (top-left corner and exclusive end). In map coordinates:
            ``left bottom right top`` (``xmin ymin xmax ymax``).
        source (str): Image name for error messages.

    Returns:
        tuple[float, float, float, float]: The four numbers.
    """
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in roi)
    except (TypeError, ValueError):
        raise ValueError(f'{source}: roi must be four numbers (xmin, ymin, '
                         f'xmax, ymax), got {roi!r}') from None
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f'{source}: roi {roi!r} is empty; expected xmin < '
                         'xmax and ymin < ymax')
    return xmin, ymin, xmax, ymax


def roi_window(roi: Sequence[float],
               roi_crs: str,
               width: int,
               height: int,
               transform=None,
               crs=None,
               source: str = 'image') -> PixelWindow:
    """Pixel window of an ROI, clipped to the image.

    Args:
        roi (Sequence[float]): See :func:`parse_roi`.
        roi_crs (str): ``'pixel'`` (column / row), ``'map'`` (the image's
            own CRS) or any CRS rasterio understands (``'EPSG:4326'``:
            longitude / latitude), whose bounds are transformed to the
            image's CRS.
        width (int): Image width in pixels.
        height (int): Image height in pixels.
        transform (affine.Affine, optional): Pixel -> map transform.
        crs (rasterio.crs.CRS, optional): The image's CRS.
        source (str): Image name for error messages.

    Returns:
        tuple[int, int, int, int]: ``(col_off, row_off, width, height)``.
        Map bounds are rounded outwards to whole pixels.

    Raises:
        ValueError: For map coordinates on an image without georeference,
            or an ROI that does not overlap the image.
    """
    xmin, ymin, xmax, ymax = parse_roi(roi, source)
    if roi_crs == 'pixel':
        cols, rows = (xmin, xmax), (ymin, ymax)
    else:
        from affine import Affine
        if transform is None or Affine(*transform[:6]) == Affine.identity():
            raise ValueError(f'{source} has no georeference (no geotransform)'
                             f'; give the roi in pixels (roi_crs="pixel")')
        if roi_crs != 'map':
            if crs is None:
                raise ValueError(f'{source} has no CRS; give the roi in its '
                                 'map coordinates (roi_crs="map") or pixels')
            from rasterio.crs import CRS
            from rasterio.warp import transform_bounds
            try:
                src_crs = CRS.from_user_input(roi_crs)
            except Exception as e:  # rasterio.errors.CRSError
                raise ValueError(f'roi_crs {roi_crs!r} is not "pixel", "map" '
                                 f'or a CRS rasterio understands: {e}') from e
            xmin, ymin, xmax, ymax = transform_bounds(src_crs, crs, xmin, ymin,
                                                      xmax, ymax)
        inv = ~Affine(*transform[:6])
        corners = [
            apply_affine(inv, x, y) for x in (xmin, xmax) for y in (ymin, ymax)
        ]
        cols = (min(c for c, _ in corners), max(c for c, _ in corners))
        rows = (min(r for _, r in corners), max(r for _, r in corners))
    col0 = math.floor(cols[0] + EDGE_TOLERANCE)
    col1 = math.ceil(cols[1] - EDGE_TOLERANCE)
    row0 = math.floor(rows[0] + EDGE_TOLERANCE)
    row1 = math.ceil(rows[1] - EDGE_TOLERANCE)
    c0, r0 = max(col0, 0), max(row0, 0)
    c1, r1 = min(col1, width), min(row1, height)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(
            f'roi {tuple(roi)} ({roi_crs}) does not overlap {source} '
            f'({width} x {height} px): pixel window columns [{col0}, {col1})'
            f', rows [{row0}, {row1})')
    if (c0, r0, c1, r1) != (col0, row0, col1, row1):
        logging.getLogger(__name__).info(
            f'roi of {source}: pixel window columns [{col0}, {col1}), rows '
            f'[{row0}, {row1}) clipped to the image: columns [{c0}, {c1}), '
            f'rows [{r0}, {r1})')
    return c0, r0, c1 - c0, r1 - r0


def check_geotransform(transform, source: str = 'image') -> None:
    """Refuse a geotransform that maps pixels to no area.

    A zero (or non-finite) pixel size makes every pixel one map point:
    polygons collapse, areas are 0 and a region of interest in map
    coordinates has no pixels, all without an error downstream.

    Args:
        transform (affine.Affine | Sequence[float]): ``(a, b, c, d, e, f)``.
        source (str): Image name for the message.

    Raises:
        ValueError: A coefficient is not finite, or the pixel area
            ``|a * e - b * d|`` is 0.
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if not all(math.isfinite(v) for v in (a, b, c, d, e, f)):
        raise ValueError(f'{source}: the geotransform has non-finite '
                         f'coefficients ({a}, {b}, {c}, {d}, {e}, {f}); '
                         'fix its georeference (gdal_edit.py -a_ullr / '
                         'gdalwarp) or remove it')
    if a * e - b * d == 0:
        raise ValueError(f'{source}: the geotransform has a zero pixel size '
                         f'({a}, {b}, {c}, {d}, {e}, {f}): every pixel would '
                         'map to one point; fix its georeference or remove '
                         'it')


def window_transform(transform, window: Optional[PixelWindow]):
    """The geotransform of a crop.

    Args:
        transform (affine.Affine): Transform of the full image.
        window (tuple, optional): ``(col_off, row_off, width, height)``.

    Returns:
        affine.Affine: The transform whose pixel (0, 0) is the window's
        top-left pixel.
    """
    from affine import Affine
    a, b, c, d, e, f = transform[:6]
    if window is None:
        return Affine(a, b, c, d, e, f)
    x0, y0 = apply_affine(transform, window[0], window[1])
    return Affine(a, b, x0, d, e, y0)


def apply_affine(transform, x: float, y: float) -> Tuple[float, float]:
    """Map pixel ``(x, y)`` (column, row) through an affine transform.

    Written out (not ``transform * (x, y)``) to work with every version of
    the ``affine`` package.
    """
    a, b, c, d, e, f = transform[:6]
    return a * x + b * y + c, d * x + e * y + f
