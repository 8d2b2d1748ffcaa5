"""Files a referring prediction is saved as (image demo, web demo, ONNX
Runtime CLI).

``<stem>_mask.png`` (0/255), ``<stem>_overlay.png`` (prediction over the
image, captioned with the expression), ``<stem>_heatmap.png`` (the global
text-filter activation) and, for a georeferenced input,
``<stem>_mask.tif`` (single-band uint8 GeoTIFF in the input's CRS and
transform, or the region of interest's) with ``<stem>_mask.qml`` (its
QGIS style: target red, the rest transparent) and ``<stem>_mask.geojson``
(the mask's polygons in the same CRS).

A large raster is read decimated to the working grid (see
:func:`~rsrefseg_core.geo.read_image`); every output is then on that grid,
its transform scaled to match, except that with
``output_resolution='native'`` ``<stem>_mask.tif`` is written on the input
file's grid, block by block
(:func:`~rsrefseg_core.geo.write_native_mask_geotiff`; also for an input
without georeference, then as a plain TIFF). The GeoJSON polygons always
trace the working-grid mask.
"""
import os
import os.path as osp
from typing import Dict, Optional

import cv2
import numpy as np

from .geo import (DEFAULT_MIN_AREA_PX, RasterImage, mask_geojson,
                  qgis_style_path, write_geojson, write_mask_geotiff,
                  write_native_mask_geotiff)
from .visualization import (FILL_ALPHA, PRED_COLOR, add_caption, display_scale,
                            draw_mask_overlay, enlarge, heatmap_overlay)

#: Grids ``<stem>_mask.tif`` can be written on.
OUTPUT_RESOLUTIONS = ('working', 'native')


def render_overlay(image: RasterImage,
                   mask: np.ndarray,
                   text: str,
                   alpha: float = FILL_ALPHA) -> np.ndarray:
    """The prediction (translucent fill + contour) under the expression.

    Args:
        image (RasterImage): The image the model saw.
        mask (np.ndarray): (H, W) 0/1 prediction.
        text (str): The expression (caption).
        alpha (float): Fill opacity.

    Returns:
        np.ndarray: (H', W', 3) uint8 RGB; images narrower than 256 px are
        enlarged by an integer factor.
    """
    rgb = image.img[..., ::-1]
    scale = display_scale(rgb.shape[1])
    drawn = draw_mask_overlay(
        enlarge(rgb, scale), enlarge(mask.astype(np.uint8), scale), PRED_COLOR,
        alpha)
    return add_caption(drawn, text)


def render_heatmap(image: RasterImage, global_map: np.ndarray,
                   text: str) -> np.ndarray:
    """The global text-filter activation (H, W) over the image, captioned.

    Returns:
        np.ndarray: (H', W', 3) uint8 RGB (enlarged like the overlay).
    """
    rgb = image.img[..., ::-1]
    scale = display_scale(rgb.shape[1])
    heat = heatmap_overlay(
        enlarge(np.ascontiguousarray(rgb), scale), global_map)
    return add_caption(heat, f'global activation: {text}')


def _imwrite(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img):
        raise OSError(f'cannot write {path}')


def save_outputs(image: RasterImage,
                 mask: np.ndarray,
                 global_map: np.ndarray,
                 text: str,
                 out_dir: str,
                 stem: str,
                 min_area_px: float = DEFAULT_MIN_AREA_PX,
                 alpha: float = FILL_ALPHA,
                 output_resolution: str = 'working',
                 probability: Optional[np.ndarray] = None,
                 threshold: float = 0.5) -> Dict[str, str]:
    """Write the output files of one prediction (see the module docstring).

    Args:
        image (RasterImage): The image the model saw.
        mask (np.ndarray): (H, W) 0/1 prediction on the image's grid.
        global_map (np.ndarray): (H, W) global activation in [0, 1].
        text (str): The expression.
        out_dir (str): Output folder (created).
        stem (str): File name stem.
        min_area_px (float): Polygons smaller than this many pixels are left
            out of the GeoJSON.
        alpha (float): Overlay fill opacity.
        output_resolution (str): ``'working'`` (default): the mask GeoTIFF
            on the grid the image was read at; ``'native'``: on the input
            file's grid (differs for decimated reads only; needs
            ``probability``).
        probability (np.ndarray, optional): (H, W) foreground probability,
            upsampled for a ``'native'`` mask.
        threshold (float): Foreground threshold of that probability (the
            model's). Defaults to 0.5.

    Returns:
        dict[str, str]: Paths under the keys ``mask``, ``overlay``,
        ``heatmap`` and, for georeferenced inputs (or native-resolution
        masks), ``geotiff``, ``qgis_style`` and (georeferenced only)
        ``geojson``.
    """
    if output_resolution not in OUTPUT_RESOLUTIONS:
        raise ValueError(f'output_resolution must be one of '
                         f'{OUTPUT_RESOLUTIONS}, got {output_resolution!r}')
    os.makedirs(out_dir, exist_ok=True)
    base = osp.join(out_dir, stem)
    mask = mask.astype(np.uint8)
    paths = dict(
        mask=base + '_mask.png',
        overlay=base + '_overlay.png',
        heatmap=base + '_heatmap.png')
    _imwrite(paths['mask'], mask * 255)
    _imwrite(paths['overlay'],
             render_overlay(image, mask, text, alpha)[..., ::-1])
    _imwrite(paths['heatmap'],
             render_heatmap(image, global_map, text)[..., ::-1])
    if output_resolution == 'native' and image.decimated:
        if probability is None:
            raise ValueError('a native-resolution mask needs the probability')
        paths['geotiff'] = write_native_mask_geotiff(base + '_mask.tif',
                                                     probability, threshold,
                                                     image, text)
    elif image.georeferenced:
        paths['geotiff'] = write_mask_geotiff(base + '_mask.tif', mask,
                                              image.transform, image.crs,
                                              image.nodata_mask, text)
    if 'geotiff' in paths:
        paths['qgis_style'] = qgis_style_path(paths['geotiff'])
    if image.georeferenced:
        paths['geojson'] = write_geojson(
            base + '_mask.geojson',
            mask_geojson(mask, image.transform, image.crs, min_area_px,
                         dict(text=text)))
    return paths
