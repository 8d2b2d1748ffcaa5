"""The mask GeoTIFF on the input file's grid, written block by block."""
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from rsrefseg_core.geo import native_mask as native_mask_module
from rsrefseg_core.geo import read_image, write_native_mask_geotiff
from rsrefseg_core.geo.native_mask import upsample_bilinear
from helpers import NON_SQUARE, write_tif


@pytest.mark.parametrize('in_shape, out_shape', [((7, 5), (30, 23)),
                                                 ((16, 16), (64, 64)),
                                                 ((9, 12), (9, 40))])
def test_blocks_match_torch_bilinear(in_shape, out_shape):
    prob = np.random.default_rng(0).random(in_shape).astype(np.float32)
    want = F.interpolate(
        torch.from_numpy(prob)[None, None],
        out_shape,
        mode='bilinear',
        align_corners=False)[0, 0].numpy()
    got = np.zeros(out_shape, np.float32)
    for r0 in range(0, out_shape[0], 8):  # assembled from uneven blocks
        for c0 in range(0, out_shape[1], 7):
            r1 = min(r0 + 8, out_shape[0])
            c1 = min(c0 + 7, out_shape[1])
            got[r0:r1, c0:c1] = upsample_bilinear(prob, (r0, r1), (c0, c1),
                                                  out_shape)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """(3, 600, 700) uint16, nodata 0 in a 50-row band and a 13 x 17 hole;
    band 2 alone also holds nodata elsewhere (other bands keep data)."""
    rng = np.random.default_rng(1)
    data = rng.integers(100, 4000, (3, 600, 700)).astype(np.uint16)
    data[:, 100:150] = 0
    data[:, 400:413, 300:317] = 0
    data[1, 500:, :] = 0
    path = write_tif(
        tmp_path_factory.mktemp('native') / 'scene.tif',
        data,
        'EPSG:3857',
        NON_SQUARE,
        nodata=0,
        tiled=True,
        blockxsize=64,
        blockysize=64)
    nodata = (data == 0).all(axis=0)
    return path, nodata


@pytest.mark.parametrize('roi', [None, (40, 30, 690, 590)])
def test_native_mask_grid_values_and_nodata(scene, tmp_path, monkeypatch, roi):
    path, nodata = scene
    monkeypatch.setattr(native_mask_module, 'CHUNK_COLS', 256)  # 3 chunks
    im = read_image(path, bands=(1, 2, 3), roi=roi, max_size=64)
    h, w = im.img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    prob = ((xx + yy) % 7 / 6.0).astype(np.float32)
    out = write_native_mask_geotiff(
        str(tmp_path / 'm.tif'), prob, 0.5, im, 'the hole')
    c0, r0, cw, ch = im.window or (0, 0, 700, 600)
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert (dst.height, dst.width) == (ch, cw)
        assert dst.transform == src.window_transform(Window(c0, r0, cw, ch))
        assert dst.crs == src.crs and dst.nodata == 255
        assert dst.tags()['expression'] == 'the hole'
        assert dst.colormap(1)[1][:3] == (255, 64, 64)
        mask = dst.read(1)
    hole = nodata[r0:r0 + ch, c0:c0 + cw]
    np.testing.assert_array_equal(mask == 255, hole)
    up = F.interpolate(
        torch.from_numpy(prob)[None, None], (ch, cw),
        mode='bilinear',
        align_corners=False)[0, 0].numpy()
    want = (up > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(mask[~hole], want[~hole])
    assert (tmp_path / 'm.qml').is_file()


def test_native_mask_needs_a_decimated_file_read(scene, tmp_path):
    path, _ = scene
    small = read_image(path, bands=(1, 2, 3), roi=(0, 0, 40, 40), max_size=64)
    prob = np.zeros(small.img.shape[:2], np.float32)
    with pytest.raises(ValueError, match='own resolution'):
        write_native_mask_geotiff(str(tmp_path / 'a.tif'), prob, 0.5, small)
    with open(path, 'rb') as f:
        from_bytes = read_image(
            f.read(), bands=(1, 2, 3), max_size=64, name='scene bytes')
    with pytest.raises(ValueError, match='scene bytes.*read from bytes'):
        write_native_mask_geotiff(
            str(tmp_path / 'b.tif'), np.zeros(from_bytes.img.shape[:2]), 0.5,
            from_bytes)
