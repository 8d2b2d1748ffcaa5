"""GeoTIFF inputs through the inference API and demo/image_demo.py on a tiny
random-initialised model: nodata never foreground, outputs georeferenced to
the input or the region of interest."""
import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from rasterio.transform import from_origin
from rasterio.windows import Window

from rsrefseg_core.geo.roi import apply_affine
from rsrefseg_mm.apis import (georeferenced_mask, inference_referring,
                              init_referring_model)
from rsrefseg_mm.datasets.synthetic_geotiff import write_synthetic_geotiff
from helpers import REPO


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory, tiny_config):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(tiny_config).model)
    path = tmp_path_factory.mktemp('geockpt') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def everything_model(tiny_config, ckpt):
    """Threshold 0 on the sigmoid: every valid pixel is predicted target,
    so what the prediction leaves out is exactly the nodata."""
    return init_referring_model(
        tiny_config, ckpt, cfg_options={'model.decode_head.threshold': 0.0})


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp('geoscene') / 'scene.tif'
    text, mask = write_synthetic_geotiff(str(path), 0, nodata_cols=6)
    return str(path), text


def test_nodata_is_never_foreground(everything_model, scene):
    path, text = scene
    res = inference_referring(everything_model, path, text, bands=(3, 2, 1))
    pred = res.pred_sem_seg.data[0].numpy()
    nodata = np.zeros((128, 128), bool)
    nodata[:, :6] = True
    assert (pred[nodata] == 0).all() and (pred[~nodata] == 1).all()
    assert (res.seg_logits.data[0].numpy()[nodata] == 0).all()
    assert (res.global_map.data[0].numpy()[nodata] == 0).all()
    mask, transform, crs, nd = georeferenced_mask(res)
    with rasterio.open(path) as src:
        assert transform == src.transform and crs == src.crs
    np.testing.assert_array_equal(nd, nodata)
    assert res.stretch_ranges is not None and len(res.stretch_ranges) == 3


def test_api_roi_and_arrays(everything_model, scene):
    path, text = scene
    # map ROI: columns [4, 40), rows [10, 30) (0.5 m pixels)
    x0, y0 = 291000 + 4 * 0.5, 4641000 - 30 * 0.5
    res = inference_referring(
        everything_model,
        path,
        text,
        bands=(3, 2, 1),
        roi=(x0, y0, x0 + 18, y0 + 10),
        roi_crs='map')
    assert res.pred_sem_seg.data.shape == (1, 20, 36)
    assert res.roi_window == (4, 10, 36, 20)
    with rasterio.open(path) as src:
        assert res.geo_transform == src.window_transform(Window(4, 10, 36, 20))
        data = src.read()
    assert res.pred_sem_seg.data[0, :, :2].sum() == 0  # nodata columns 4, 5
    # the same data as a masked uint16 array: same prediction, no georef
    arr = np.ma.masked_equal(data.transpose(1, 2, 0), 0)
    res_arr = inference_referring(everything_model, arr, text, bands=(3, 2, 1))
    res_file = inference_referring(
        everything_model, path, text, bands=(3, 2, 1))
    torch.testing.assert_close(res_arr.seg_logits.data,
                               res_file.seg_logits.data)
    assert georeferenced_mask(res_arr).transform is None
    with pytest.raises(ValueError, match='4 band'):
        inference_referring(everything_model, path, text)


def test_empty_expression_after_cleanup(everything_model, scene):
    for text in ('&nbsp;', '&amp;nbsp;', '\u00a0\u3000'):
        with pytest.raises(
                ValueError, match='sample 0: the expression is '
                'empty'):
            inference_referring(
                everything_model, scene[0], text, bands=(3, 2, 1))


def polygon_area(rings):

    def ring(r):
        x, y = np.asarray(r, float).T
        return abs(0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))

    return ring(rings[0]) - sum(ring(r) for r in rings[1:])


def test_image_demo_geotiff_one_liner(tiny_config, ckpt, tmp_path):
    """The README one-liner: 16-bit 4-band GeoTIFF -> mask GeoTIFF + GeoJSON
    georeferenced to the ROI."""
    path = tmp_path / 'big.tif'
    rng = np.random.default_rng(0)
    data = rng.integers(200, 4000, (4, 90, 120)).astype(np.uint16)
    data[:, 40:50, 50:70] = 0  # a nodata hole inside the ROI
    with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=120,
            height=90,
            count=4,
            dtype='uint16',
            crs='EPSG:32631',
            nodata=0,
            transform=from_origin(600000, 5400000, 3.0, 3.0)) as dst:
        dst.write(data)
    out = tmp_path / 'out'
    roi = ['600090', '5399760', '600300', '5399910']  # cols 30-100, rows 30-80
    cmd = [
        sys.executable, 'demo/image_demo.py',
        str(path), 'the red roof', tiny_config, ckpt, '--out-dir',
        str(out), '--bands', '3', '2', '1', '--roi', *roi, '--roi-crs', 'map',
        '--min-polygon-area', '0', '--cfg-options',
        'model.decode_head.threshold=0.0'
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'stretched 2-98 %' in proc.stdout
    for suffix in ('mask.png', 'overlay.png', 'heatmap.png', 'mask.tif',
                   'mask.geojson'):
        assert (out / f'big_{suffix}').is_file(), suffix
    with rasterio.open(path) as src, \
            rasterio.open(out / 'big_mask.tif') as res:
        assert res.crs == src.crs
        assert res.transform == src.window_transform(Window(30, 30, 70, 50))
        mask = res.read(1)
    assert mask.shape == (50, 70)
    hole = np.zeros_like(mask, bool)
    hole[10:20, 20:40] = True
    assert (mask[hole] == 255).all() and (mask[~hole] == 1).all()
    fc = json.load(open(out / 'big_mask.geojson'))
    assert fc['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::32631'
    assert [len(f['geometry']['coordinates']) for f in fc['features']] == [2]
    total = sum(
        polygon_area(f['geometry']['coordinates']) for f in fc['features'])
    assert total == pytest.approx((mask == 1).sum() * 9.0)
    assert fc['features'][0]['properties']['text'] == 'the red roof'


@pytest.fixture(scope='module')
def large_scene(tmp_path_factory):
    """(4, 800, 1000) uint16 in EPSG:32631 (3 m pixels), nodata 0 in a
    column band and a hole: larger than the tiny model's working size
    (2 x 128 px), so it is read decimated to 205 x 256."""
    path = tmp_path_factory.mktemp('large') / 'large.tif'
    rng = np.random.default_rng(0)
    data = rng.integers(200, 4000, (4, 800, 1000)).astype(np.uint16)
    data[:, :, :96] = 0
    data[:, 300:340, 500:530] = 0
    with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=1000,
            height=800,
            count=4,
            dtype='uint16',
            crs='EPSG:32631',
            nodata=0,
            tiled=True,
            blockxsize=128,
            blockysize=128,
            transform=from_origin(600000, 5400000, 3.0, 3.0)) as dst:
        dst.write(data)
    return str(path), (data == 0).all(axis=0)


def test_api_reads_large_scenes_at_the_working_size(everything_model,
                                                    large_scene):
    path, nodata = large_scene
    res = inference_referring(
        everything_model, path, 'the red roof', bands=(3, 2, 1))
    assert res.pred_sem_seg.data.shape == (1, 205, 256)
    mask, transform, crs, nd = georeferenced_mask(res)
    with rasterio.open(path) as src:
        assert crs == src.crs
        for x, y in ((0, 0), (256, 205)):  # same corners, coarser pixels
            want = apply_affine(src.transform, x * 1000 / 256, y * 800 / 205)
            assert apply_affine(transform, x, y) == pytest.approx(want)
    assert (transform.a, transform.e) == pytest.approx(
        (3.0 * 1000 / 256, -3.0 * 800 / 205))
    assert nd[:, :24].all() and not nd[:, 25:].all()  # 96 / 1000 * 256
    assert (mask[nd] == 0).all() and (mask[~nd] == 1).all()
    full = inference_referring(
        everything_model,
        path,
        'the red roof',
        bands=(3, 2, 1),
        max_read_size=None)
    assert full.pred_sem_seg.data.shape == (1, 800, 1000)
    np.testing.assert_array_equal(full.nodata_mask, nodata)


@pytest.mark.parametrize('resolution', ['working', 'native'])
def test_image_demo_output_resolution(tiny_config, ckpt, large_scene, tmp_path,
                                      resolution):
    from helpers import load_script
    path, nodata = large_scene
    out = tmp_path / 'out'
    load_script('demo/image_demo.py').main([
        path, 'the red roof', tiny_config, ckpt, '--out-dir',
        str(out), '--bands', '3', '2', '1', '--output-resolution', resolution,
        '--cfg-options', 'model.decode_head.threshold=0.0'
    ])
    with rasterio.open(path) as src, \
            rasterio.open(out / 'large_mask.tif') as res:
        assert res.crs == src.crs
        mask = res.read(1)
        if resolution == 'native':
            assert res.transform == src.transform
            assert mask.shape == (800, 1000)
            np.testing.assert_array_equal(mask == 255, nodata)
        else:
            assert mask.shape == (205, 256)
            assert res.bounds == pytest.approx(src.bounds)
            assert res.res == pytest.approx(
                (3.0 * 1000 / 256, 3.0 * 800 / 205))
    assert (mask[mask != 255] == 1).all()
    with open(out / 'large_mask.geojson') as f:
        fc = json.load(f)
    total = sum(
        polygon_area(f['geometry']['coordinates']) for f in fc['features'])
    # the polygons trace the working-grid mask in both cases
    working = inference_referring(
        init_referring_model(
            tiny_config,
            ckpt,
            cfg_options={'model.decode_head.threshold': 0.0}),
        path,
        'the red roof',
        bands=(3, 2, 1))
    n = int(working.pred_sem_seg.data.sum())
    assert total == pytest.approx(n * 9.0 * (1000 / 256) * (800 / 205))


def test_working_size_follows_the_model_input(tiny_config):
    from rsrefseg_mm.apis import working_size
    from rsrefseg_mm.apis.pipeline import resolve_max_read_size
    tiny = Config.fromfile(tiny_config)
    assert working_size(tiny) == 256
    big = Config.fromfile(
        str(REPO / 'configs/rsrefseg/rsrefseg-b_clip-vit-'
            'b16-sam-vit-b_8xb4-lora-200e_rrsisd-'
            '1024x1024.py'))
    assert working_size(big) == 2048
    assert resolve_max_read_size(None, tiny) is None
    assert resolve_max_read_size(300, tiny) == 300
    for bad in (0, -5, 2.5, 'native', True):
        with pytest.raises(ValueError, match='max_read_size'):
            resolve_max_read_size(bad, tiny)
    tiny.test_dataloader.dataset.pipeline = [dict(type='PackReferringInputs')]
    assert working_size(tiny) == 256  # the data preprocessor's size
    tiny.model.data_preprocessor.pop('size')
    with pytest.raises(ValueError, match='give max_read_size'):
        working_size(tiny)
