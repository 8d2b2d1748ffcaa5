"""A synthetic referring scene as a 16-bit, 4-band, georeferenced GeoTIFF.

Lets the remote-sensing path (band selection, percentile stretch, nodata,
georeferenced outputs) be tried without real imagery: the scene of
:class:`SyntheticReferringDataset` becomes bands blue, green, red,
near-infrared (in that order, as many sensors deliver them, so
``bands=(3, 2, 1)`` shows true colour) of 12-bit-like values in uint16, with
a nodata strip along the left edge, in UTM zone 33N (EPSG:32633) at 0.5 m
pixels.
"""
from typing import Tuple

import numpy as np

from .synthetic import SyntheticReferringDataset

#: Band order of the file (1-based band i = BAND_NAMES[i - 1]).
BAND_NAMES = ('blue', 'green', 'red', 'nir')
#: Nodata value of the file.
NODATA = 0
#: Default georeference: upper-left corner (easting, northing) in EPSG:32633
#: and the pixel size in metres.
ORIGIN = (291000.0, 4641000.0)
PIXEL_SIZE = 0.5
CRS = 'EPSG:32633'


def write_synthetic_geotiff(path: str,
                            index: int = 0,
                            split: str = 'test',
                            img_size: int = 128,
                            nodata_cols: int = 6,
                            seed: int = 0) -> Tuple[str, np.ndarray]:
    """Write synthetic scene ``index`` of ``split`` as a 4-band GeoTIFF.

    Args:
        path (str): Output ``.tif``.
        index (int): Scene index (the scenes of ``make demo``'s test split
            with attribute expressions).
        split (str): Dataset split.
        img_size (int): Image side in pixels.
        nodata_cols (int): Width of the nodata strip on the left edge.
        seed (int): Dataset seed.

    Returns:
        tuple: The scene's expression and its (H, W) uint8 target mask.
    """
    from rsrefseg_core.geo import require_rasterio
    rasterio = require_rasterio(path)
    from rasterio.transform import from_origin
    ds = SyntheticReferringDataset(
        split=split,
        num_samples=index + 1,
        img_size=img_size,
        seed=seed,
        num_objects=(3, 4),
        expression_types=('attribute', ))
    info = ds.get_data_info(index)
    bgr = info['img'].astype(np.float64)
    rng = np.random.default_rng(index)
    nir = 0.6 * bgr[..., 1] + 0.2 * bgr[..., 2] + 0.2 * bgr[..., 0]
    bands = np.stack([bgr[..., 0], bgr[..., 1], bgr[..., 2], nir])
    data = 180 + 12 * bands + rng.normal(0, 4, bands.shape)
    data = np.clip(np.rint(data), 1, 4095).astype(np.uint16)
    data[:, :, :nodata_cols] = NODATA
    profile = dict(
        driver='GTiff',
        width=img_size,
        height=img_size,
        count=4,
        dtype='uint16',
        crs=CRS,
        nodata=NODATA,
        compress='deflate',
        transform=from_origin(*ORIGIN, PIXEL_SIZE, PIXEL_SIZE))
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data)
        for i, name in enumerate(BAND_NAMES, 1):
            dst.set_band_description(i, name)
    return info['text'], info['gt_seg_map']
