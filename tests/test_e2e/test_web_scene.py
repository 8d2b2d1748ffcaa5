"""The web demo's whole-scene mode through its handler
(``WebPredictor.segment_scene``), on the generalized-referring tiny config
with random weights: the upload segmented at the file's resolution, the
downloads on its grid, the scene's windows kept for the next expression
(and its private copy dropped with it), refused uploads as messages."""
import os

import numpy as np
import pytest
import rasterio
import torch

from rsrefseg_mm.apis import init_referring_model
from helpers import GRES_CONFIG, load_script, write_geotiff


@pytest.fixture(scope='module')
def web(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('GRADIO_TEMP_DIR', str(tmp_path_factory.mktemp('gradio')))
        yield load_script('demo/web_demo.py')


@pytest.fixture(scope='module')
def model():
    """Every valid pixel of every window is the target (mask threshold 0,
    presence thresholds 0.01): what the mask leaves out is the nodata."""
    torch.manual_seed(0)
    model = init_referring_model(GRES_CONFIG, None, device='cpu')
    model.decode_head.threshold = 0.0
    model.decode_head.presence_cfg.update(threshold=0.01, scene_threshold=0.01)
    return model


def uploads(folder):
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_scene_mode_answers_on_the_file_grid_and_keeps_the_scene(
        web, model, tmp_path, monkeypatch):
    up = tmp_path / 'uploads'
    predictor = web.WebPredictor(
        model, str(tmp_path / 'out'), upload_dir=str(up))
    # 150 x 200 px: four windows of the model's 128 px (stride 96)
    path = write_geotiff(tmp_path / 'scene.tif', 150, 200)
    overview, heat, files, status = predictor.segment_scene(
        path, 'the red roof', '3 2 1')
    assert heat is None
    assert overview.shape[1] == 200 and overview.shape[0] > 150
    assert [os.path.basename(f) for f in files] == [
        'scene_the_red_roof_mask.tif', 'scene_the_red_roof_mask.qml',
        'scene_the_red_roof_mask.geojson', 'scene_the_red_roof_presence.tif'
    ]
    assert 'scene.tif: 200 x 150 px, 4 windows of 128 x 128 px (stride ' \
        '96 x 96), 4 encoded in' in status
    assert '"the red roof" -&gt; presence' in status and ', found, ' in status
    with rasterio.open(path) as src, rasterio.open(files[0]) as res:
        assert res.transform == src.transform and res.crs == src.crs
        assert res.shape == src.shape == (150, 200)
        nodata = src.read_masks(1) == 0
        mask = res.read(1)
    np.testing.assert_array_equal(mask == 255, nodata)
    assert (mask[~nodata] == 1).all()
    with rasterio.open(files[3]) as pres:
        assert pres.shape == (2, 3) and pres.res == (960.0, 960.0)
    held = uploads(up)
    assert len(held) == 1  # the private copy of the scene held

    # the next expression on the same upload: no window encoded again
    runtime = predictor.scene.scene.runtime

    def no_encoding(*args):
        raise AssertionError('the scene was encoded again')

    monkeypatch.setattr(runtime, 'encode_windows', no_encoding)
    _, _, files, status = predictor.segment_scene(path, 'the road', '3 2 1')
    assert 'scene.tif: 4 windows already encoded (kept in memory)' in status
    assert os.path.basename(files[0]) == 'scene_the_road_mask.tif'
    assert uploads(up) == held
    # another upload is encoded, and the previous copy is dropped
    monkeypatch.undo()
    other = write_geotiff(tmp_path / 'other.tif', 100, 240)
    _, _, _, status = predictor.segment_scene(other, 'the road', '3 2 1')
    assert '3 windows of 128 x 128 px' in status and '3 encoded in' in status
    assert len(uploads(up)) == 1 and uploads(up) != held
    predictor.close()
    assert uploads(up) == []


def test_scene_mode_refusals_are_messages(web, model, tmp_path):
    up = tmp_path / 'uploads'
    predictor = web.WebPredictor(
        model, str(tmp_path / 'out'), upload_dir=str(up), max_scene_windows=3)
    path = write_geotiff(tmp_path / 'scene.tif', 150, 200)
    vrt = tmp_path / 'evil.tif'
    vrt.write_text('<VRTDataset rasterXSize="8" rasterYSize="8">'
                   '</VRTDataset>')
    cases = [
        ((path, 'the red roof', '3 2 1'),
         'scene.tif is 200 x 150 px: 4 windows of 128 x 128 px, more than '
         'the 3 this server segments as a whole scene'),
        ((str(vrt), 'the red roof', ''), 'evil.tif is refused: it is a VRT'),
        ((path, '   ', '3 2 1'), 'empty'),
        ((path, 'the red roof', '3 2'), 'bands must be three band numbers'),
    ]
    for args, message in cases:
        with pytest.raises(web.gr.Error) as info:
            predictor.segment_scene(*args)
        assert message in str(info.value)
        assert str(tmp_path) not in str(info.value)  # no server path
        assert uploads(up) == []  # no copy kept of a refused scene


def test_page_offers_the_scene_mode(web, model, tmp_path):
    predictor = web.WebPredictor(model, str(tmp_path / 'out'))
    demo = web.build_demo(predictor)
    names = [d.get('api_name') for d in demo.config['dependencies']]
    assert 'segment' in names and 'segment_scene' in names
    args = web.parse_args([
        'cfg.py', 'ckpt.pth', '--max-memory', '64', '--max-scene-windows', '10'
    ])
    assert (args.max_memory, args.max_scene_windows) == (64.0, 10)
