"""rsrefseg_core.geo.read_image / array_to_image: pixels, bands, stretch,
nodata and errors on synthetic GeoTIFFs."""
import cv2
import mmcv
import numpy as np
import pytest

from rsrefseg_core.geo import array_to_image, read_image, to_uint8


def expected_stretch(band, valid, low=2, high=98):
    lo, hi = np.percentile(band[valid].astype(np.float64), [low, high])
    scaled = (np.nan_to_num(band.astype(np.float64)) - lo) * 255 / (hi - lo)
    out = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    out[~valid] = 0
    return out, (lo, hi)


def test_uint8_rgb_geotiff_pixels_and_georeference(geo_files):
    import rasterio
    im = read_image(geo_files['rgb8'])
    rgb = geo_files['rgb8_data']
    np.testing.assert_array_equal(im.img, rgb[::-1].transpose(1, 2, 0))
    assert im.stretch_ranges is None and im.nodata_mask is None
    with rasterio.open(geo_files['rgb8']) as src:
        assert im.transform == src.transform and im.crs == src.crs
    assert im.bands == (1, 2, 3)  # tagged red, green, blue


def test_uint8_rgb_geotiff_equals_png_read_by_mmcv(geo_files, tmp_path):
    bgr = geo_files['rgb8_data'][::-1].transpose(1, 2, 0)
    mmcv.imwrite(np.ascontiguousarray(bgr), str(tmp_path / 'same.png'))
    png = read_image(tmp_path / 'same.png')
    np.testing.assert_array_equal(png.img, mmcv.imread(tmp_path / 'same.png'))
    np.testing.assert_array_equal(png.img, read_image(geo_files['rgb8']).img)
    assert png.transform is None and png.crs is None


def test_uint16_four_band_needs_bands(geo_files):
    with pytest.raises(ValueError) as exc:
        read_image(geo_files['u16'])
    msg = str(exc.value)
    assert 'u16.tif' in msg and '4 band(s)' in msg
    assert 'bands=(3, 2, 1)' in msg and '--bands 3 2 1' in msg


def test_uint16_stretch_nodata_and_band_order(geo_files):
    data = geo_files['u16_data']
    im = read_image(geo_files['u16'], bands=(3, 2, 1))
    valid = np.ones(data.shape[1:], bool)
    valid[:10, :10] = False
    np.testing.assert_array_equal(im.nodata_mask, ~valid)
    assert im.nodata_pixels == 100
    for out_ch, band in zip((2, 1, 0), (3, 2, 1)):  # BGR image, R = band 3
        exp, rng = expected_stretch(data[band - 1], valid)
        np.testing.assert_array_equal(im.img[..., out_ch], exp)
        lo, hi = im.stretch_ranges[(3, 2, 1).index(band)]
        assert (lo, hi) == pytest.approx(rng)
        assert lo > 0  # the nodata zeros were excluded from the percentiles
    assert 'stretched 2-98 %' in im.describe()
    assert '100 nodata pixels' in im.describe()


def test_custom_stretch_and_no_stretch(geo_files):
    data = geo_files['u16_data']
    valid = data[0] != 0
    im = read_image(geo_files['u16'], bands=(4, 4, 4), stretch=(0, 100))
    exp, _ = expected_stretch(data[3], valid, 0, 100)
    np.testing.assert_array_equal(im.img[..., 0], exp)
    with pytest.raises(ValueError, match=r'u16.tif.*outside 0-255'):
        read_image(geo_files['u16'], bands=(3, 2, 1), stretch=None)
    with pytest.raises(ValueError, match='0 <= low < high <= 100'):
        read_image(geo_files['u16'], bands=(3, 2, 1), stretch=(98, 2))


def test_float32_nan_is_nodata_and_excluded(geo_files):
    data = geo_files['f32_data']
    im = read_image(geo_files['f32'])
    valid = np.isfinite(data[0])
    assert im.nodata_mask.sum() == 1 and im.nodata_mask[5, 5]
    exp, _ = expected_stretch(data[0], valid)
    np.testing.assert_array_equal(im.img[..., 2], exp)  # band 1 = R
    assert im.dtype == 'float32'


def test_one_band_needs_explicit_grey(geo_files):
    with pytest.raises(
            ValueError, match=r'one.tif has 1 band.*bands=\(1, 1, '
            r'1\)'):
        read_image(geo_files['one_band'])
    im = read_image(geo_files['one_band'], bands=[1])
    assert (im.img[..., 0] == im.img[..., 1]).all()
    assert (im.img[..., 1] == im.img[..., 2]).all()
    with pytest.raises(ValueError, match=r'1 band\(s\).*\[2\] do not exist'):
        read_image(geo_files['one_band'], bands=(1, 2, 1))


@pytest.mark.parametrize('content', [b'II*\x00' + b'garbage' * 20, b''])
def test_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / 'broken.tif'
    path.write_bytes(content)
    with pytest.raises(OSError, match='broken.tif'):
        read_image(path)
    with pytest.raises(FileNotFoundError, match='absent.tif'):
        read_image(tmp_path / 'absent.tif')


def test_16bit_png_is_stretched_not_squashed(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 4096, (24, 32, 3)).astype(np.uint16)  # 12-bit
    cv2.imwrite(str(tmp_path / 'deep.png'), img)
    im = read_image(tmp_path / 'deep.png')
    assert im.stretch_ranges is not None
    # mmcv's colour loader keeps the high byte: 12-bit data is near black
    assert mmcv.imread(tmp_path / 'deep.png').max() <= 16
    assert im.img.max() == 255 and im.img.min() == 0


def test_arrays_follow_the_same_rule(geo_files):
    data = geo_files['u16_data']
    hwc = data.transpose(1, 2, 0)
    masked = np.ma.masked_equal(hwc, 0)
    from_array = array_to_image(masked, bands=(3, 2, 1))
    from_file = read_image(geo_files['u16'], bands=(3, 2, 1))
    np.testing.assert_array_equal(from_array.img, from_file.img)
    np.testing.assert_array_equal(from_array.nodata_mask,
                                  from_file.nodata_mask)
    # 3-channel arrays without bands stay BGR; uint8 passes unchanged
    bgr = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(array_to_image(bgr).img, bgr)
    # float reflectance is stretched, not cast to 0 / 1
    refl = np.random.default_rng(2).uniform(0, 0.4, (8, 9, 3))
    out = array_to_image(refl).img
    assert out.max() == 255 and len(np.unique(out)) > 50
    with pytest.raises(ValueError, match=r'array has 4 band'):
        array_to_image(hwc, name='array')
    with pytest.raises(ValueError, match='outside 0-255'):
        array_to_image(hwc[..., :3], stretch=None)


def test_to_uint8_constant_and_empty_bands():
    data = np.stack([
        np.full((4, 4), 7, np.uint16),
        np.arange(16, dtype=np.uint16).reshape(4, 4)
    ])
    valid = np.ones((2, 4, 4), bool)
    valid[1] = False
    out, ranges = to_uint8(data, valid)
    assert (out[0] == 0).all() and ranges[0] == (7.0, 7.0)
    assert (out[1] == 0).all() and np.isnan(ranges[1][0])
