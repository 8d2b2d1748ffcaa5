"""Region of interest in pixels, map coordinates and another CRS."""
import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from rsrefseg_core.geo import read_image, roi_window


def test_pixel_roi_crops_and_georeferences_the_crop(geo_files):
    full = read_image(geo_files['u16'], bands=(3, 2, 1))
    crop = read_image(geo_files['u16'], bands=(3, 2, 1), roi=(20, 15, 50, 40))
    assert crop.img.shape[:2] == (25, 30) and crop.window == (20, 15, 30, 25)
    with rasterio.open(geo_files['u16']) as src:
        assert crop.transform == src.window_transform(Window(20, 15, 30, 25))
        raw = src.read(3, window=Window(20, 15, 30, 25))
    # the stretch uses the crop's own percentiles
    lo, hi = np.percentile(raw.astype(float), [2, 98])
    assert crop.stretch_ranges[0] == pytest.approx((lo, hi))
    assert full.img.shape[:2] == (50, 70)


def test_map_roi_rounds_outwards_to_whole_pixels(geo_files):
    # u16.tif: origin (400000, 5000000), 10 m pixels
    crop = read_image(
        geo_files['u16'],
        bands=(3, 2, 1),
        roi=(400105, 4999700, 400300, 4999895),
        roi_crs='map')
    # columns 10.5 .. 30 -> [10, 30); rows 10.5 .. 30 -> [10, 30)
    assert crop.window == (10, 10, 20, 20)
    assert crop.transform.c == 400100 and crop.transform.f == 4999900


def test_roi_in_another_crs(geo_files):
    with rasterio.open(geo_files['u16']) as src:
        utm = (400200, 4999600, 400400, 4999800)  # columns 20-40, rows 20-40
        lonlat = transform_bounds(src.crs, 'EPSG:4326', *utm)
    crop = read_image(
        geo_files['u16'], bands=(3, 2, 1), roi=lonlat, roi_crs='EPSG:4326')
    c, r, w, h = crop.window
    # the lon/lat box covers the UTM box (a little more: it is not
    # axis-aligned in UTM)
    assert c <= 20 and r <= 20 and c + w >= 40 and r + h >= 40
    assert w <= 22 and h <= 22


def test_roi_clipping_and_errors(geo_files, tmp_path):
    assert roi_window((-5, -5, 10, 10), 'pixel', 20, 20) == (0, 0, 10, 10)
    with pytest.raises(ValueError, match='does not overlap'):
        roi_window((30, 30, 40, 40), 'pixel', 20, 20, source='x.tif')
    with pytest.raises(ValueError, match='is empty'):
        roi_window((10, 10, 5, 20), 'pixel', 20, 20)
    import mmcv
    mmcv.imwrite(np.zeros((8, 8, 3), np.uint8), str(tmp_path / 'plain.png'))
    with pytest.raises(ValueError, match='plain.png has no georeference'):
        read_image(tmp_path / 'plain.png', roi=(0, 0, 1, 1), roi_crs='map')
    with pytest.raises(ValueError, match='roi_crs'):
        read_image(
            geo_files['u16'],
            bands=(1, 1, 1),
            roi=(0, 0, 1, 1),
            roi_crs='not-a-crs')
