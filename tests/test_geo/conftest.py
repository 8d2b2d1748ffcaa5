"""Synthetic GeoTIFFs written with rasterio for the geo tests."""
import numpy as np
import pytest
from rasterio.transform import from_origin

from helpers import NON_SQUARE, write_tif

#: UTM 33N (the synthetic files use 10 m pixels)
UTM = 'EPSG:32633'


@pytest.fixture(scope='session')
def geo_files(tmp_path_factory):
    """uint8 RGB, uint16 4-band with nodata, float32 with NaN, non-square."""
    root = tmp_path_factory.mktemp('geo')
    rng = np.random.default_rng(0)
    files = {}

    rgb = rng.integers(0, 256, (3, 40, 60), dtype=np.uint8)
    files['rgb8'] = write_tif(
        root / 'rgb8.tif',
        rgb,
        UTM,
        from_origin(400000, 5000000, 10, 10),
        photometric='RGB')
    files['rgb8_data'] = rgb

    # 12-bit values in uint16, band 4 brighter; nodata 0 in a corner block
    # and extreme values in one pixel per band that the 2-98 % stretch must
    # clip
    u16 = rng.integers(100, 4000, (4, 50, 70)).astype(np.uint16)
    u16[:, :10, :10] = 0
    files['u16'] = write_tif(
        root / 'u16.tif',
        u16,
        UTM,
        from_origin(400000, 5000000, 10, 10),
        nodata=0)
    files['u16_data'] = u16

    f32 = rng.uniform(0.02, 0.6, (3, 30, 30)).astype(np.float32)
    f32[:, 5, 5] = np.nan
    files['f32'] = write_tif(root / 'f32.tif', f32, UTM,
                             from_origin(400000, 5000000, 10, 10))
    files['f32_data'] = f32

    ns = rng.integers(0, 256, (3, 64, 48), dtype=np.uint8)
    files['non_square'] = write_tif(
        root / 'non_square.tif',
        ns,
        'EPSG:3857',
        NON_SQUARE,
        photometric='RGB')

    one = rng.integers(0, 1000, (1, 20, 20)).astype(np.uint16)
    files['one_band'] = write_tif(root / 'one.tif', one, UTM,
                                  from_origin(500000, 4000000, 1, 1))
    files['one_band_data'] = one
    return files
