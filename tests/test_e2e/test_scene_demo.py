"""``demo/image_demo.py --slide``: a whole GeoTIFF scene at the file's
resolution through the scene predictor (the generalized-referring tiny
config, random weights): the mask GeoTIFF on the file's grid, the presence
GeoTIFF, the GeoJSON and the overview; window embeddings kept in a file
and reopened without encoding; options it refuses."""
import json
import math

import cv2
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_mm.apis import ReferringPredictor
from helpers import GRES_CONFIG, load_script, write_geotiff

TEXTS = ['the red roof', 'the road left of the river']
#: Every valid pixel of every window is the target: what the mask leaves
#: out is exactly the nodata (random weights decide nothing else).
EVERYTHING = [
    '--cfg-options', 'model.decode_head.threshold=0.0',
    'model.decode_head.presence_cfg.threshold=0.01',
    'model.decode_head.presence_cfg.scene_threshold=0.01'
]


@pytest.fixture(scope='module')
def gres_ckpt(tmp_path_factory):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(GRES_CONFIG).model)
    path = tmp_path_factory.mktemp('gres') / 'gres.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def demo():
    return load_script('demo/image_demo.py')


@pytest.fixture
def scene(tmp_path):
    """(4, 150, 200) uint16, EPSG:32633 at 10 m, 7 nodata columns: six
    96 px windows with stride 72."""
    return write_geotiff(tmp_path / 'scene.tif', 150, 200)


def run(demo, scene, ckpt, out, *extra):
    return demo.main([
        scene, *TEXTS, GRES_CONFIG, ckpt, '--out-dir',
        str(out), '--bands', '3', '2', '1', '--slide', '--window', '96',
        '--window-batch', '4', *extra
    ])


def test_slide_writes_the_scene_outputs(demo, gres_ckpt, scene, tmp_path,
                                        capsys):
    out = tmp_path / 'out'
    answers = run(demo, scene, gres_ckpt, out, *EVERYTHING)
    printed = capsys.readouterr().out
    assert '200 x 150 px, 6 windows of 96 x 96 px (stride 72 x 72), ' \
        '6 encoded in' in printed and 'windows/s' in printed
    assert [a.result.text for a in answers] == TEXTS
    with rasterio.open(scene) as src:
        nodata = ~(src.read_masks(1) > 0)
        transform, crs = src.transform, src.crs
    assert nodata[:, :7].all() and not nodata[:, 7:].any()
    stems = ('scene_the_red_roof', 'scene_the_road_left_of_the_river')
    for answer, stem in zip(answers, stems):
        assert answer.result.found
        files = answer.files
        assert files['mask'] == str(out / f'{stem}_mask.tif')
        with rasterio.open(files['mask']) as res:
            assert res.transform == transform and res.crs == crs
            assert (res.height, res.width) == (150, 200)
            mask = res.read(1)
        np.testing.assert_array_equal(mask == 255, nodata)
        assert (mask[~nodata] == 1).all()
        assert answer.result.target_pixels == int((~nodata).sum())
        with rasterio.open(files['presence']) as pres:
            # one cell per stride, the highest presence of its windows
            assert (pres.height, pres.width) == (math.ceil(150 / 72),
                                                 math.ceil(200 / 72))
            assert pres.transform == transform @ Affine.scale(72, 72)
            assert pres.crs == crs and pres.dtypes[0] == 'float32'
            grid = pres.read(1)
        assert np.nanmax(grid) == pytest.approx(answer.result.presence)
        with open(files['geojson']) as f:
            fc = json.load(f)
        assert fc['features'] and len(fc['features']) == answer.polygons
        # one polygon over the valid area, merged across window seams
        assert sum(f['properties']['area']
                   for f in fc['features']) == pytest.approx(
                       (~nodata).sum() * 100.0)
        overview = cv2.imread(files['overview'])
        assert overview.shape[1] == 200 and overview.shape[0] > 150
        line = [
            x for x in printed.splitlines() if f'"{answer.result.text}"' in x
        ][0]
        assert (f'presence {answer.result.presence:.2f}, found, '
                f'{answer.result.target_pixels} px, {answer.polygons} '
                'polygon(s) in ') in line


def test_embeddings_file_is_reopened_without_encoding(demo, gres_ckpt, scene,
                                                      tmp_path, capsys,
                                                      monkeypatch):
    emb = str(tmp_path / 'scene.npz')
    first = run(demo, scene, gres_ckpt, tmp_path / 'a', '--embeddings', emb)
    assert '6 encoded in' in capsys.readouterr().out

    def no_encoding(*args):
        raise AssertionError('the scene was encoded again')

    monkeypatch.setattr(ReferringPredictor, 'encode_windows', no_encoding)
    second = run(demo, scene, gres_ckpt, tmp_path / 'b', '--embeddings', emb)
    assert f'0 encoded: reopened from {emb}' in capsys.readouterr().out
    for a, b in zip(first, second):
        assert a.result.presence == b.result.presence
        with rasterio.open(a.files['mask']) as x, \
                rasterio.open(b.files['mask']) as y:
            np.testing.assert_array_equal(x.read(1), y.read(1))
    # other windows: the file is refused by name, not decoded
    with pytest.raises(ValueError, match='holds windows of another grid'):
        run(demo, scene, gres_ckpt, tmp_path / 'c', '--embeddings', emb,
            '--stride', '48')


#: What --slide refuses (or needs), and the message.
REFUSED = {
    '--slide does not take --batch': ['--slide', '--batch', 'pairs.jsonl'],
    '--slide does not take --roi': ['--slide', '--roi', '0', '0', '9', '9'],
    '--slide does not take --output-resolution working':
    ['--slide', '--output-resolution', 'working'],
    '--window: only with --slide': ['--window', '96'],
    '--embeddings, --max-memory: only with --slide':
    ['--embeddings', 'x.npz', '--max-memory', '8'],
    'leaves gaps between windows':
    ['--slide', '--window', '96', '--stride', '97'],
    '--window takes N or H W': ['--slide', '--window', '1', '2', '3'],
    '--presence-threshold: only with --slide': ['--presence-threshold', '0.9'],
    '--presence-threshold must be in (0, 1), got 1.0':
    ['--slide', '--presence-threshold', '1'],
    '--flip-check: only with --slide': ['--flip-check', 'horizontal'],
    "--flip-check: invalid choice: 'sideways'":
    ['--slide', '--flip-check', 'sideways'],
    '--filter-gate: only with --slide': ['--filter-gate', '-2'],
}


@pytest.mark.parametrize('message', list(REFUSED))
def test_refused_options(demo, message, capsys):
    argv = ['a.tif', 'text', 'cfg.py', 'ckpt.pth', '--out-dir', 'out']
    with pytest.raises(SystemExit):
        demo.parse_args(argv + REFUSED[message])
    assert message in capsys.readouterr().err
