"""A geotransform that maps pixels to no area is refused by name, on read
and on vectorising, instead of collapsing the outputs to one point."""
import math

import numpy as np
import pytest
from rasterio.transform import Affine

from rsrefseg_core.geo import mask_geojson, read_image
from helpers import write_tif

GOOD = Affine(0.5, 0, 500000, 0, -0.5, 4000000)


# (GDAL's GeoTIFF writer drops a transform whose x pixel size is 0)
@pytest.mark.parametrize(
    'transform',
    [
        Affine(0.5, 0, 500000, 0, 0, 4000000),
        Affine(0.5, 1.0, 500000, 0.25, 0.5, 4000000),  # a*e - b*d == 0
    ])
def test_zero_pixel_size_is_refused_on_read(tmp_path, transform):
    data = np.full((3, 16, 16), 100, np.uint8)
    path = write_tif(tmp_path / 'flat.tif', data, 'EPSG:32633', transform)
    with pytest.raises(ValueError, match='flat.tif.*zero pixel size'):
        read_image(path)


def test_good_transform_reads(tmp_path):
    data = np.full((3, 16, 16), 100, np.uint8)
    path = write_tif(tmp_path / 'ok.tif', data, 'EPSG:32633', GOOD)
    assert tuple(read_image(path).transform)[:6] == tuple(GOOD)[:6]


@pytest.mark.parametrize('transform', [
    (0.0, 0.0, 1.0, 0.0, -1.0, 2.0),
    (math.nan, 0.0, 1.0, 0.0, -1.0, 2.0),
    (1.0, 0.0, math.inf, 0.0, -1.0, 2.0),
])
def test_vectorising_refuses_a_degenerate_transform(transform):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    with pytest.raises(ValueError, match='geotransform'):
        mask_geojson(mask, Affine(*transform))
    polygons = mask_geojson(mask, GOOD)['features']
    assert len(polygons) == 1
    assert polygons[0]['properties']['area'] == pytest.approx(16 * 0.25)
