"""Georeferenced outputs: the mask as a GeoTIFF and its polygons as GeoJSON.

Both are written in the input's CRS with the input's (or the crop's)
geotransform, so they open at the right place in QGIS / ArcGIS / GDAL.
"""
import json
import os
from typing import Dict, List, Optional

import numpy as np

from .reader import require_rasterio
from .roi import apply_affine, check_geotransform

#: Mask values in the GeoTIFF.
MASK_BACKGROUND, MASK_TARGET, MASK_NODATA = 0, 1, 255
#: Colour table of the GeoTIFF (RGB: a TIFF colour map has no alpha, so
#: background shows black in viewers that only read the table).
MASK_COLORMAP = {
    MASK_BACKGROUND: (0, 0, 0, 0),
    MASK_TARGET: (255, 64, 64, 255),
    MASK_NODATA: (0, 0, 0, 0)
}
#: QGIS style written beside the GeoTIFF as ``<name>.qml``, which QGIS
#: applies when it opens ``<name>.tif``: target red, background and nodata
#: transparent, so the mask lies over the image instead of hiding it.
QGIS_STYLE = """<qgis version="3.22" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1"
        nodataColor="">
      <colorPalette>
        <paletteEntry value="{background}" color="#000000" alpha="0"
            label="background"/>
        <paletteEntry value="{target}" color="#ff4040" alpha="255"
            label="target"/>
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast gamma="1" contrast="0" brightness="0"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""
#: Default minimum polygon area in pixels (smaller specks are dropped).
DEFAULT_MIN_AREA_PX = 4.0
#: Tile size of mask GeoTIFFs (pixels).
MASK_BLOCK = 256


def qgis_style_path(path: str) -> str:
    """``<name>.qml`` beside ``<name>.tif``: the style QGIS loads with it."""
    return os.path.splitext(path)[0] + '.qml'


def write_mask_geotiff(path: str,
                       mask: np.ndarray,
                       transform,
                       crs=None,
                       nodata_mask: Optional[np.ndarray] = None,
                       text: Optional[str] = None) -> str:
    """Write a referring mask as a single-band uint8 GeoTIFF.

    Values: 1 target, 0 background, 255 nodata (where the input had no
    data; declared as the band's nodata value). Deflate-compressed, with a
    colour table (target red, background black) and, beside it,
    ``<name>.qml``: the QGIS style (target red, background and nodata
    transparent) that QGIS applies when it opens the file.

    Args:
        path (str): Output ``.tif`` path.
        mask (np.ndarray): (H, W) prediction, nonzero = target.
        transform (affine.Affine): Pixel -> map transform.
        crs (rasterio.crs.CRS, optional): The input's CRS.
        nodata_mask (np.ndarray, optional): (H, W) bool, True = nodata.
        text (str, optional): The expression, stored as a tag.

    Returns:
        str: ``path``.
    """
    rasterio = require_rasterio(path)
    data = (np.asarray(mask) > 0).astype(np.uint8) * MASK_TARGET
    if nodata_mask is not None:
        data[nodata_mask] = MASK_NODATA
    with rasterio.open(path, 'w', **mask_profile(*data.shape, transform,
                                                 crs)) as dst:
        dst.write(data, 1)
        describe_mask_band(dst, text)
    write_qgis_style(path)
    return path


def mask_profile(height: int, width: int, transform, crs=None) -> dict:
    """rasterio profile of a mask GeoTIFF: one uint8 band, nodata 255,
    deflate, 256 x 256 tiles when the mask is that large."""
    profile = dict(
        driver='GTiff',
        width=width,
        height=height,
        count=1,
        dtype='uint8',
        crs=crs,
        transform=transform,
        nodata=MASK_NODATA,
        compress='deflate')
    if height >= MASK_BLOCK and width >= MASK_BLOCK:
        profile.update(
            tiled=True, blockxsize=MASK_BLOCK, blockysize=MASK_BLOCK)
    return profile


def describe_mask_band(dst, text: Optional[str] = None) -> None:
    """Colour table, band description and the expression tag of an open
    mask GeoTIFF."""
    dst.write_colormap(1, MASK_COLORMAP)
    dst.set_band_description(
        1, 'referred object: 1 target, 0 background, 255 nodata')
    if text is not None:
        dst.update_tags(expression=text)


def write_qgis_style(path: str) -> str:
    """Write ``<name>.qml`` beside the mask GeoTIFF ``path``."""
    style = qgis_style_path(path)
    with open(style, 'w', encoding='utf-8') as f:
        f.write(
            QGIS_STYLE.format(background=MASK_BACKGROUND, target=MASK_TARGET))
    return style


def _ring_area(ring: List) -> float:
    """Signed shoelace area of a closed ring (positive = counter-clockwise
    in a y-up frame)."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def mask_polygons(mask: np.ndarray,
                  transform=None,
                  min_area_px: float = DEFAULT_MIN_AREA_PX) -> List[dict]:
    """Vectorise a mask into polygons with holes.

    Args:
        mask (np.ndarray): (H, W), nonzero = target.
        transform (affine.Affine, optional): Pixel -> map transform; None
            keeps pixel coordinates (column, row).
        min_area_px (float): Polygons (exterior minus holes) smaller than
            this many pixels are dropped. Holes are always kept.

    Returns:
        list[dict]: GeoJSON ``Polygon`` geometries with the area in pixels
        (``area_px``). Rings follow the right-hand rule (exterior
        counter-clockwise, holes clockwise) in map coordinates.
    """
    require_rasterio('vectorising a mask')
    from affine import Affine
    from rasterio.features import shapes
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if transform is not None:
        check_geotransform(transform, 'mask')
    transform = Affine.identity() if transform is None else Affine(
        *transform[:6])
    polygons = []
    for geom, _ in shapes(binary, mask=binary > 0, connectivity=4):
        rings = geom['coordinates']
        area_px = abs(_ring_area(rings[0])) - sum(
            abs(_ring_area(r)) for r in rings[1:])
        if area_px < min_area_px:
            continue
        out = []
        for i, ring in enumerate(rings):
            pts = [apply_affine(transform, x, y) for x, y in ring]
            ccw = _ring_area(pts) > 0
            if ccw != (i == 0):  # exterior CCW, holes CW
                pts = pts[::-1]
            out.append([list(p) for p in pts])
        polygons.append(
            dict(type='Polygon', coordinates=out, area_px=float(area_px)))
    return polygons


def crs_member(crs) -> Optional[dict]:
    """The GeoJSON (2008) ``crs`` member naming ``crs``, read by GDAL/QGIS.

    Args:
        crs (rasterio.crs.CRS, optional): The CRS.

    Returns:
        dict | None: ``{"type": "name", "properties": {"name": ...}}`` with
        an OGC URN for EPSG CRSs, the WKT otherwise.
    """
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f'urn:ogc:def:crs:EPSG::{epsg}' if epsg else crs.to_wkt()
    return dict(type='name', properties=dict(name=name))


def mask_geojson(mask: np.ndarray,
                 transform,
                 crs=None,
                 min_area_px: float = DEFAULT_MIN_AREA_PX,
                 properties: Optional[Dict] = None) -> dict:
    """A GeoJSON FeatureCollection of the mask's polygons in ``crs``.

    Args:
        mask (np.ndarray): (H, W), nonzero = target.
        transform (affine.Affine): Pixel -> map transform.
        crs (rasterio.crs.CRS, optional): CRS of the coordinates (named in
            the collection's ``crs`` member).
        min_area_px (float): See :func:`mask_polygons`.
        properties (dict, optional): Added to every feature (e.g. the
            expression).

    Returns:
        dict: FeatureCollection; each feature has ``id``, ``area_px`` and
        ``area`` (map units squared) properties.
    """
    from affine import Affine
    pixel_area = abs(Affine(*transform[:6]).determinant)
    features = []
    for i, poly in enumerate(mask_polygons(mask, transform, min_area_px)):
        area_px = poly.pop('area_px')
        props = dict(id=i, area_px=area_px, area=area_px * pixel_area)
        props.update(properties or {})
        features.append(dict(type='Feature', properties=props, geometry=poly))
    collection = dict(type='FeatureCollection', features=features)
    member = crs_member(crs)
    if member is not None:
        collection['crs'] = member
    return collection


def write_geojson(path: str, collection: dict) -> str:
    """Write a FeatureCollection as UTF-8 JSON.

    Returns:
        str: ``path``.
    """
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(collection, f, ensure_ascii=False)
    return path
