"""Files a referring prediction is saved as (image demo, web demo).

``<stem>_mask.png`` (0/255), ``<stem>_overlay.png`` (prediction over the
image, captioned with the expression), ``<stem>_heatmap.png`` (the global
text-filter activation) and, for a georeferenced input,
``<stem>_mask.tif`` (single-band uint8 GeoTIFF in the input's CRS and
transform, or the region of interest's) with ``<stem>_mask.qml`` (its
QGIS style: target red, the rest transparent) and ``<stem>_mask.geojson``
(the mask's polygons in the same CRS).

A large raster is read decimated to the working grid (see
:func:`rsrefseg_mm.geo.read_image`); every output is then on that grid, its
transform scaled to match, except that with ``output_resolution='native'``
``<stem>_mask.tif`` is written on the input file's grid, block by block
(:func:`rsrefseg_mm.geo.write_native_mask_geotiff`; also for an input
without georeference, then as a plain TIFF). The GeoJSON polygons always
trace the working-grid mask.
"""
import os
import os.path as osp
from typing import Dict

import mmcv
import numpy as np
from mmseg.structures import SegDataSample

from rsrefseg_deploy.visualization import (FILL_ALPHA, PRED_COLOR, add_caption,
                                           display_scale, draw_mask_overlay,
                                           enlarge, heatmap_overlay)
from ..geo import (DEFAULT_MIN_AREA_PX, RasterImage, mask_geojson,
                   qgis_style_path, write_geojson, write_mask_geotiff,
                   write_native_mask_geotiff)

#: Grids ``<stem>_mask.tif`` can be written on.
OUTPUT_RESOLUTIONS = ('working', 'native')


def render_overlay(image: RasterImage,
                   result: SegDataSample,
                   text: str,
                   alpha: float = FILL_ALPHA) -> np.ndarray:
    """The prediction (translucent fill + contour) under the expression.

    Args:
        image (RasterImage): The image the model saw.
        result (SegDataSample): From :func:`inference_referring`.
        text (str): The expression (caption).
        alpha (float): Fill opacity.

    Returns:
        np.ndarray: (H', W', 3) uint8 RGB; images narrower than 256 px are
        enlarged by an integer factor.
    """
    rgb = image.img[..., ::-1]
    scale = display_scale(rgb.shape[1])
    mask = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    drawn = draw_mask_overlay(
        enlarge(rgb, scale), enlarge(mask, scale), PRED_COLOR, alpha)
    return add_caption(drawn, text)


def render_heatmap(image: RasterImage, result: SegDataSample,
                   text: str) -> np.ndarray:
    """The global text-filter activation over the image, captioned.

    Returns:
        np.ndarray: (H', W', 3) uint8 RGB (enlarged like the overlay).
    """
    rgb = image.img[..., ::-1]
    scale = display_scale(rgb.shape[1])
    heat = heatmap_overlay(
        enlarge(np.ascontiguousarray(rgb), scale),
        result.global_map.data[0].cpu().numpy())
    return add_caption(heat, f'global activation: {text}')


def save_referring_outputs(image: RasterImage,
                           result: SegDataSample,
                           text: str,
                           out_dir: str,
                           stem: str,
                           min_area_px: float = DEFAULT_MIN_AREA_PX,
                           alpha: float = FILL_ALPHA,
                           output_resolution: str = 'working',
                           threshold: float = 0.5) -> Dict[str, str]:
    """Write the output files of one prediction (see the module docstring).

    Args:
        image (RasterImage): The image the model saw.
        result (SegDataSample): From :func:`inference_referring`.
        text (str): The expression.
        out_dir (str): Output folder (created).
        stem (str): File name stem.
        min_area_px (float): Polygons smaller than this many pixels are left
            out of the GeoJSON.
        alpha (float): Overlay fill opacity.
        output_resolution (str): ``'working'`` (default): the mask GeoTIFF
            on the grid the image was read at; ``'native'``: on the input
            file's grid (differs for decimated reads only).
        threshold (float): Foreground threshold of the probability
            upsampled for a ``'native'`` mask: the decode head's
            (``model.decode_head.threshold``). Defaults to 0.5.

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
    mask = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    paths = dict(
        mask=base + '_mask.png',
        overlay=base + '_overlay.png',
        heatmap=base + '_heatmap.png')
    mmcv.imwrite(mask * 255, paths['mask'])
    mmcv.imwrite(
        mmcv.rgb2bgr(render_overlay(image, result, text, alpha)),
        paths['overlay'])
    mmcv.imwrite(
        mmcv.rgb2bgr(render_heatmap(image, result, text)), paths['heatmap'])
    if output_resolution == 'native' and image.decimated:
        paths['geotiff'] = write_native_mask_geotiff(
            base + '_mask.tif', result.seg_logits.data[0].cpu().numpy(),
            threshold, image, text)
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
