"""What a scene prediction writes, strip by strip as the mosaic finishes
rows: the mask GeoTIFF on the scene's grid, its polygons merged across
strip (and window) seams, and optionally the probability in memory."""
import warnings
from typing import List, Optional

import numpy as np

from ..geo.export import (DEFAULT_MIN_AREA_PX, MASK_NODATA, MASK_TARGET,
                          crs_member, describe_mask_band, mask_polygons,
                          mask_profile, write_qgis_style)
from ..geo.reader import require_rasterio
from .reader import SceneReader


def polygons_to_features(polygons: List, transform, crs, min_area_px: float,
                         properties: dict) -> dict:
    """Merge pixel-coordinate polygons that share edges (one object cut by
    strip seams) and make a GeoJSON FeatureCollection in map coordinates.

    Args:
        polygons (list[shapely.Polygon]): In (column, row) pixels.
        transform (affine.Affine, optional): Pixel -> map; None keeps
            pixels.
        crs: Named in the collection's ``crs`` member.
        min_area_px (float): Merged polygons smaller than this are dropped.
        properties (dict): Added to every feature.

    Returns:
        dict: As :func:`rsrefseg_core.geo.mask_geojson` writes it (``id``,
        ``area_px``, ``area`` per feature; exterior rings counter-clockwise).
    """
    from shapely import affinity, unary_union
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient
    merged = unary_union(polygons) if polygons else None
    parts = [] if merged is None or merged.is_empty else \
        list(getattr(merged, 'geoms', [merged]))
    parts.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    pixel_area = 1.0 if transform is None else abs(transform.determinant)
    features = []
    for part in parts:
        if part.area < min_area_px:
            continue
        geom = part if transform is None else affinity.affine_transform(
            part, [
                transform.a, transform.b, transform.d, transform.e,
                transform.c, transform.f
            ])
        props = dict(
            id=len(features),
            area_px=float(part.area),
            area=float(part.area) * pixel_area)
        props.update(properties)
        geometry = mapping(orient(geom, sign=1.0))
        geometry = dict(
            type='Polygon',
            coordinates=[[list(p) for p in ring]
                         for ring in geometry['coordinates']])
        features.append(
            dict(type='Feature', properties=props, geometry=geometry))
    collection = dict(type='FeatureCollection', features=features)
    member = crs_member(crs)
    if member is not None:
        collection['crs'] = member
    return collection


class SceneOutputs:
    """The strip sink of a :class:`~.mosaic.ProbabilityMosaic`.

    Args:
        reader (SceneReader): The scene (size, georeference, validity).
        threshold (float): Foreground above this probability.
        mask_path (str, optional): The mask GeoTIFF to write (values as
            :func:`rsrefseg_core.geo.write_mask_geotiff`: 1 target, 0
            background, 255 nodata), tiled, one strip at a time.
        keep_probability (bool): Also hold the (H, W) float32 probability
            in memory (for scenes that fit; tests, small images).
        polygons (bool): Vectorise each strip.
        text (str, optional): The expression (a tag of the GeoTIFF).
    """

    def __init__(self,
                 reader: SceneReader,
                 threshold: float,
                 mask_path: Optional[str] = None,
                 keep_probability: bool = False,
                 polygons: bool = True,
                 text: Optional[str] = None) -> None:
        self.reader, self.threshold, self.text = reader, threshold, text
        self.probability = np.zeros(reader.shape, np.float32) \
            if keep_probability else None
        self.polygons = [] if polygons else None
        self.target_pixels = 0
        self.mask_path, self._dst = mask_path, None
        if mask_path is not None:
            rasterio = require_rasterio(mask_path)
            from affine import Affine
            from rasterio.errors import NotGeoreferencedWarning
            transform = reader.transform or Affine.identity()
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self._dst = rasterio.open(
                    mask_path, 'w',
                    **mask_profile(*reader.shape, transform, reader.crs))

    def __call__(self, row: int, probability: np.ndarray) -> None:
        """Take the final rows ``row : row + len(probability)``."""
        stop = row + probability.shape[0]
        valid = self.reader.valid_rows(row, stop)
        probability = np.where(valid, probability, 0).astype(np.float32)
        fg = probability > self.threshold
        self.target_pixels += int(fg.sum())
        if self.probability is not None:
            self.probability[row:stop] = probability
        if self._dst is not None:
            from rasterio.windows import Window
            out = np.where(valid,
                           fg.astype(np.uint8) * MASK_TARGET,
                           MASK_NODATA).astype(np.uint8)
            self._dst.write(
                out, 1, window=Window(0, row, out.shape[1], out.shape[0]))
        if self.polygons is not None and fg.any():
            from affine import Affine
            from shapely.geometry import shape
            self.polygons += [
                shape(p) for p in mask_polygons(
                    fg, Affine.translation(0, row), min_area_px=0)
            ]

    def close(self) -> None:
        """Finish the GeoTIFF (colour table, expression tag, QGIS style)."""
        if self._dst is not None:
            describe_mask_band(self._dst, self.text)
            self._dst.close()
            self._dst = None
            write_qgis_style(self.mask_path)

    def geojson(self, min_area_px: float = DEFAULT_MIN_AREA_PX) -> dict:
        """The polygons merged across seams, in map coordinates."""
        if self.polygons is None:
            raise ValueError('polygons were not collected')
        props = {} if self.text is None else dict(text=self.text)
        return polygons_to_features(self.polygons, self.reader.transform,
                                    self.reader.crs, min_area_px, props)
