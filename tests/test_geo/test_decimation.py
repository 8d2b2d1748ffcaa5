"""Decimated reads: working shape, values (mean of the valid pixels),
nodata, overviews, regions of interest and the scaled georeference."""
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from rsrefseg_core.geo import decimated_shape, read_image, scale_transform
from rsrefseg_core.geo.decimation import (READ_CACHE_BYTES, read_bands,
                                          read_cache_env)
from rsrefseg_core.geo.roi import apply_affine
from helpers import NON_SQUARE, write_tif


@pytest.mark.parametrize(
    'size, max_size, expected',
    [
        ((100, 80), 100, None),  # fits: read as is
        ((100, 80), None, None),
        ((1000, 400), 100, (100, 40)),
        ((400, 1000), 256, (102, 256)),
        ((16384, 16384), 256, (256, 256)),
        ((5000, 3), 100, (100, 1)),  # never 0 pixels
    ])
def test_decimated_shape(size, max_size, expected):
    assert decimated_shape(*size, max_size) == expected


def test_decimated_shape_rejects_a_bad_size():
    with pytest.raises(ValueError, match='max_size must be >= 1'):
        decimated_shape(10, 10, 0)


def corners(transform, h, w):
    """The four corners' map coordinates, flattened."""
    return [
        v for x in (0, w) for y in (0, h)
        for v in apply_affine(transform, x, y)
    ]


def test_scale_transform_keeps_the_extent():
    t = scale_transform(NON_SQUARE, (300, 200), (100, 40))
    assert corners(t, 100, 40) == pytest.approx(corners(NON_SQUARE, 300, 200))
    assert (t.a, t.e) == pytest.approx((2.0 * 5, -3.0 * 3))


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """(4, 64, 96) uint16, nodata 0: the top-left 8 x 8 block all nodata,
    the next block half nodata; non-square pixels."""
    rng = np.random.default_rng(0)
    data = rng.integers(100, 4000, (4, 64, 96)).astype(np.uint16)
    data[:, :8, :8] = 0
    data[:, :8, 8:12] = 0
    path = write_tif(
        tmp_path_factory.mktemp('dec') / 'scene.tif',
        data,
        'EPSG:3857',
        NON_SQUARE,
        nodata=0,
        tiled=True,
        blockxsize=16,
        blockysize=16)
    return path, data


def block_mean_of_valid(band, valid, f):
    h, w = band.shape
    b = band.reshape(h // f, f, w // f, f).astype(np.float64)
    v = valid.reshape(h // f, f, w // f, f)
    n = v.sum(axis=(1, 3))
    mean = (b * v).sum(axis=(1, 3)) / np.maximum(n, 1)
    return mean, n > 0


def test_values_are_the_mean_of_valid_pixels(scene):
    path, data = scene
    with rasterio.open(path) as src:
        out, valid = read_bands(src, (3, 2, 1), None, (8, 12))
    assert out.shape == (3, 8, 12) and out.dtype == np.uint16
    for i, b in enumerate((3, 2, 1)):
        mean, any_valid = block_mean_of_valid(data[b - 1], data[b - 1] > 0, 8)
        np.testing.assert_array_equal(valid[i], any_valid)
        assert not valid[i, 0, 0] and valid[i, 0, 1]  # half nodata: valid
        np.testing.assert_allclose(out[i][any_valid], mean[any_valid], atol=1)


def test_internal_mask_leaves_masked_pixels_out(tmp_path):
    data = np.full((1, 16, 16), 200, np.uint8)
    data[0, :8, :8] = 10  # masked, except one pixel of 60
    data[0, 0, 0] = 60
    mask = np.full((16, 16), 255, np.uint8)
    mask[:8, :8] = 0
    mask[0, 0] = 255
    mask[8:, 8:] = 0  # a block with no data at all
    path = tmp_path / 'masked.tif'
    with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=16,
            height=16,
            count=1,
            dtype='uint8',
            crs='EPSG:32633',
            transform=Affine(1, 0, 0, 0, -1, 16)) as dst:
        dst.write(data)
        dst.write_mask(mask)
    with rasterio.open(path) as src:
        out, valid = read_bands(src, [1], None, (2, 2))
    assert out[0, 0, 0] == 60 and valid[0, 0, 0]
    assert out[0, 0, 1] == 200 and not valid[0, 1, 1]


def test_overviews_are_used(tmp_path):
    path = write_tif(tmp_path / 'ovr.tif', np.full((1, 64, 64), 100,
                                                   np.uint16), 'EPSG:32633',
                     Affine(1, 0, 0, 0, -1, 64))
    with rasterio.open(path, 'r+') as dst:
        dst.build_overviews([4], Resampling.average)
    with rasterio.open(path, 'r+') as dst:  # overviews now out of date
        dst.write(np.full((1, 64, 64), 300, np.uint16))
    with rasterio.open(path) as src:
        from_overview, _ = read_bands(src, [1], None, (16, 16))
        from_pixels, _ = read_bands(src, [1], None, None)
    assert (from_overview == 100).all() and (from_pixels == 300).all()


def test_read_image_decimates_and_scales_the_transform(scene):
    path, data = scene
    im = read_image(path, bands=(3, 2, 1), max_size=24)
    assert im.img.shape == (16, 24, 3) and im.decimated
    assert im.native_shape == (64, 96) and im.path == path
    assert im.native_transform == NON_SQUARE
    assert corners(im.transform, 16,
                   24) == pytest.approx(corners(NON_SQUARE, 64, 96))
    assert (im.transform.a, im.transform.e) == pytest.approx((8.0, -12.0))
    # stretch and nodata come from the decimated read
    with rasterio.open(path) as src:
        dec, valid = read_bands(src, (3, 2, 1), None, (16, 24))
    lo, hi = np.percentile(dec[0][valid[0]].astype(float), [2, 98])
    assert im.stretch_ranges[0] == pytest.approx((lo, hi))
    expected = np.zeros((16, 24), bool)
    expected[:2, :3] = True  # 8 x 12 nodata = 2 x 3 working pixels
    np.testing.assert_array_equal(im.nodata_mask, expected)
    assert 'read from 96 x 64 px (each pixel the mean of 4 x 4)' in \
        im.describe()


def test_small_reads_are_not_decimated(scene):
    path, _ = scene
    im = read_image(path, bands=(3, 2, 1), max_size=96)
    assert im.img.shape == (64, 96, 3) and not im.decimated
    assert im.transform == NON_SQUARE and im.native_shape is None
    assert 'read from' not in im.describe()


def test_large_roi_is_decimated_too(scene):
    path, _ = scene
    im = read_image(path, bands=(3, 2, 1), roi=(16, 8, 96, 48), max_size=20)
    assert im.window == (16, 8, 80, 40)  # file pixels
    assert im.img.shape == (10, 20, 3) and im.native_shape == (40, 80)
    with rasterio.open(path) as src:
        crop = src.window_transform(Window(16, 8, 80, 40))
    assert im.native_transform == crop
    assert corners(im.transform, 10,
                   20) == pytest.approx(corners(crop, 40, 80))


def test_bytes_are_decimated_without_a_path(scene):
    path, _ = scene
    with open(path, 'rb') as f:
        im = read_image(f.read(), bands=(3, 2, 1), max_size=24)
    assert im.img.shape == (16, 24, 3) and im.path is None


def test_photos_keep_their_size(tmp_path):
    import cv2
    img = np.random.default_rng(0).integers(
        0, 256, (40, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'p.png'), img)
    im = read_image(tmp_path / 'p.png', max_size=16)
    assert im.img.shape == (40, 60, 3) and not im.decimated


def test_gdal_cache_is_bounded_unless_the_user_sets_it(monkeypatch):
    monkeypatch.delenv('GDAL_CACHEMAX', raising=False)
    assert read_cache_env() == dict(GDAL_CACHEMAX=READ_CACHE_BYTES)
    with rasterio.Env(GDAL_CACHEMAX=32 * 2**20):
        assert read_cache_env() == {}
    monkeypatch.setenv('GDAL_CACHEMAX', '512')
    assert read_cache_env() == {}
