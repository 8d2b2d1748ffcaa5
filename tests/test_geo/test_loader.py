"""LoadReferringImageFromFile on GeoTIFFs: bands, stretch, nodata metainfo,
errors naming the sample, the stretch logged once."""
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope

import rsrefseg_mm  # noqa: F401
from rsrefseg_core.geo import read_image
from rsrefseg_mm.datasets.transforms import loading


@pytest.fixture(autouse=True)
def scope():
    init_default_scope('mmseg')


def test_loader_reads_geotiff_and_packs_raster_metainfo(geo_files):
    pipeline = Compose([
        dict(type='LoadReferringImageFromFile', bands=(3, 2, 1)),
        dict(type='PackReferringInputs')
    ])
    out = pipeline(dict(img_path=geo_files['u16'], text='the tank', ref_id=7))
    ref = read_image(geo_files['u16'], bands=(3, 2, 1))
    np.testing.assert_array_equal(out['inputs'].permute(1, 2, 0).numpy(),
                                  ref.img)
    meta = out['data_samples'].metainfo
    np.testing.assert_array_equal(meta['nodata_mask'], ref.nodata_mask)
    assert meta['geo_transform'] == ref.transform and meta['crs'] == ref.crs
    assert meta['stretch_ranges'] == ref.stretch_ranges
    assert meta['ori_shape'] == (50, 70)


def test_loader_jpeg_path_unchanged(tmp_path):
    import mmcv
    img = np.random.default_rng(0).integers(
        0, 256, (20, 30, 3), dtype=np.uint8)
    mmcv.imwrite(img, str(tmp_path / 'a.jpg'))
    t = loading.LoadReferringImageFromFile()
    out = t(dict(img_path=str(tmp_path / 'a.jpg')))
    np.testing.assert_array_equal(out['img'],
                                  mmcv.imread(str(tmp_path / 'a.jpg')))
    assert 'nodata_mask' not in out and 'geo_transform' not in out
    # bands on an 8-bit photo: (3, 2, 1) swaps red and blue
    swapped = loading.LoadReferringImageFromFile(bands=(3, 2, 1))(
        dict(img_path=str(tmp_path / 'a.jpg')))
    np.testing.assert_array_equal(swapped['img'], out['img'][..., ::-1])


def test_loader_errors_name_the_sample(geo_files):
    t = loading.LoadReferringImageFromFile()
    with pytest.raises(ValueError, match=r'u16.tif has 4 band.*ref_id=3'):
        t(dict(img_path=geo_files['u16'], ref_id=3, sent_id=4))
    t = loading.LoadReferringImageFromFile(bands=(3, 2, 1), stretch=None)
    with pytest.raises(ValueError, match=r'outside 0-255.*ref_id=3'):
        t(dict(img_path=geo_files['u16'], ref_id=3))


def test_stretch_logged_once(geo_files, monkeypatch):
    messages = []
    monkeypatch.setattr(loading, 'print_log',
                        lambda msg, **kw: messages.append(msg))
    t = loading.LoadReferringImageFromFile(bands=(3, 2, 1))
    for _ in range(3):
        t(dict(img_path=geo_files['u16']))
    assert len(messages) == 1
    assert 'stretched 2-98 %' in messages[0] and '100 nodata' in messages[0]
