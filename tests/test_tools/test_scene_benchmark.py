"""Large synthetic scenes (rsrefseg_mm.datasets.synthetic_large_scene) and
the ``scene`` mode of tools/analysis_tools/benchmark.py."""
import json

import numpy as np
import pytest
import rasterio
from test_benchmark import assert_context, number, tables

from rsrefseg_mm.datasets.synthetic_large_scene import (CELL, CRS, PIXEL_SIZE,
                                                        generate_large_scene,
                                                        write_large_scene)
from rsrefseg_mm.datasets.synthetic_scenes import (COLORS, object_mask,
                                                   resolve_expression)
from helpers import TINY_CONFIG, load_script

bm = load_script('tools/analysis_tools/benchmark.py')


@pytest.fixture(scope='module')
def scene_1024(tmp_path_factory):
    out = tmp_path_factory.mktemp('scene')
    return write_large_scene(generate_large_scene(3, 1024), str(out), 's')


def cell_of(obj):
    return int(obj['cy'] // CELL), int(obj['cx'] // CELL)


def test_expressions_refer_to_what_the_scene_holds(scene_1024):
    objects, exprs = scene_1024['objects'], scene_1024['expressions']
    # 3-4 objects in each of the 8 x 8 cells, inside their cell
    per_cell = np.bincount([r * 8 + c for r, c in map(cell_of, objects)])
    assert per_cell.size == 64 and set(per_cell) <= {3, 4}
    assert [e['kind'] for e in exprs] == ['one', 'several', 'absent']
    for e in exprs:  # the generator's parser agrees with the targets
        assert resolve_expression(e['text'], objects) == e['targets']
    one, several, absent = exprs
    assert one['text'].startswith('the ') and len(one['targets']) == 1
    assert several['text'].startswith('all the ')
    assert len(several['targets']) == 3
    # the instances and the single referent lie two or more cells apart:
    # no window of one cell holds two of them
    cells = [cell_of(objects[i]) for i in one['targets'] + several['targets']]
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2
    # absent: a hard no-target expression (colour and shape both there)
    _, color, shape = absent['text'].split()
    assert absent['targets'] == []
    assert not any(o['color'] == color and o['shape'] == shape
                   for o in objects)
    assert any(o['color'] == color for o in objects)
    assert any(o['shape'] == shape for o in objects)
    # seeded
    assert generate_large_scene(3, 1024)['objects'] == objects
    assert generate_large_scene(4, 1024)['objects'] != objects


def test_ground_truth_lies_where_the_shapes_were_drawn(scene_1024):
    objects, size = scene_1024['objects'], scene_1024['size']
    with rasterio.open(scene_1024['path']) as src:
        assert (src.count, src.width, src.height) == (3, size, size)
        assert src.dtypes == ('uint8', ) * 3 and src.crs == CRS
        assert src.res == (PIXEL_SIZE, PIXEL_SIZE) and src.profile['tiled']
        assert src.block_shapes[0] == (256, 256)
        assert src.profile['compress'] == 'deflate'
        rgb = src.read().astype(np.float64)
    for e in scene_1024['expressions']:
        with rasterio.open(e['gt_path']) as gt_src:
            assert gt_src.transform == src.transform
            gt = gt_src.read(1)
            # map centre of each referent -> its pixel, inside the mask
            for t in e['targets']:
                row, col = gt_src.index(objects[t]['x'], objects[t]['y'])
                assert (row, col) == (round(objects[t]['cy']),
                                      round(objects[t]['cx']))
                assert gt[row, col] == 1
        # the mask written strip by strip is the shapes drawn on the whole
        expected = np.zeros((size, size), np.uint8)
        for t in e['targets']:
            expected |= object_mask(objects[t], size)
        np.testing.assert_array_equal(gt, expected)
        assert gt.any() == bool(e['targets'])
    # the image shows each referent in its colour, the background not
    for t in scene_1024['expressions'][0]['targets'] + \
            scene_1024['expressions'][1]['targets']:
        obj = objects[t]
        inside = object_mask(obj, size).astype(bool)
        fill = np.clip(np.add(COLORS[obj['color']], obj['jitter']), 0, 255)
        np.testing.assert_allclose(rgb[:, inside].mean(1), fill, atol=2)
    labels = np.zeros((size, size), np.uint8)
    for obj in objects:
        labels |= object_mask(obj, size)
    background = rgb[:, labels == 0]
    assert 60 < background.mean() < 140 and background.std() > 8


def test_exclusive_referent_colours():
    scene = generate_large_scene(5, 512, referent_colours='exclusive')
    objects, (one, several, absent) = scene['objects'], scene['expressions']
    referents = one['targets'] + several['targets']
    colours = {objects[i]['color'] for i in referents}
    assert len(colours) == 2
    others = [o for i, o in enumerate(objects) if i not in referents]
    assert not any(o['color'] in colours for o in others)
    # the shapes are shared, the no-target expression is still a hard one
    shapes = {objects[i]['shape'] for i in referents}
    assert shapes <= {o['shape'] for o in others}
    _, color, shape = absent['text'].split()
    assert color not in colours and absent['targets'] == []
    assert any(o['color'] == color for o in objects)
    assert any(o['shape'] == shape for o in objects)
    with pytest.raises(ValueError, match='referent_colours'):
        generate_large_scene(5, 512, referent_colours='unique')


def test_scene_needs_room_for_its_referents():
    with pytest.raises(ValueError, match='size >= 2 \\* cell'):
        generate_large_scene(0, 200)
    with pytest.raises(ValueError, match='no room for 9 instances'):
        generate_large_scene(0, 256, instances=9)


def test_scores_and_goals(tmp_path):
    scene = write_large_scene(generate_large_scene(0, 256), str(tmp_path), 's')
    one, several, absent = scene['expressions']
    assert bm.score_answer(one['gt_path'], one) == dict(iou=1.0)
    assert bm.score_answer(absent['gt_path'], one) == dict(iou=0.0)
    assert bm.score_answer(absent['gt_path'], absent) == dict(empty=True)
    assert bm.score_answer(one['gt_path'], absent) == dict(empty=False)
    # a method that finds the one referent, misses the several, answers
    # the no-target expression with a mask
    answers = [
        dict(seconds=s, mask_path=p)
        for s, p in ((1., one['gt_path']), (.5, absent['gt_path']),
                     (.5, one['gt_path']))
    ]
    run = dict(
        scenes=[dict(windows=9, encode_s=3., answers=answers)], peak_rss=900.)
    cells = bm.scene_scores(run, [scene])
    assert cells['hit_one'] == 100 and cells['hit_several'] == 0
    assert cells['hit'] == 50 and cells['miou'] == 50
    assert cells['empty'] == 0 and cells['giou'] == pytest.approx(100 / 3)
    assert cells['first'] == 4 and cells['follow'] == .5
    assert cells['ratio'] == .125 and cells['wps'] == 3
    assert bm.scene_scores(dict(killed=True, peak_rss=7e3), [scene]) == \
        dict(peak='stopped at 7000 MiB')
    decimated = dict(cells, hit=0, peak=800.)
    good = dict(cells, hit=80, empty=80, ratio=.1, peak=980.)
    goals = bm.scene_goals({
        (256, 'slide'): cells,
        (512, 'slide'): good,
        (256, 'decimated'): decimated,
        (512, 'decimated'): decimated
    })
    assert [g[2] for g in goals] == ['no'] * 3 + ['yes'] * 4
    assert goals[-1][1] == '900 -> 980 MiB (+8.9 %)'


def test_scene_mode_smoke(tmp_path, capsys):
    """Random weights, one 256 px scene: both methods run in their own
    processes and fill the table."""
    cells = bm.main([
        'scene', TINY_CONFIG, '--sizes', '256', '--scenes', '1', '--threads',
        '1', '--work-dir',
        str(tmp_path)
    ])
    text = capsys.readouterr().out
    assert_context(text)
    table = tables(text)['measurement']
    assert table['header'] == [
        'measurement', 'decimated 256 px', 'slide 256 px'
    ]
    rows = table['rows']
    assert rows['model input'] == ['256 x 256 read', '9 windows']
    assert rows['windows/s encoded'][0] == '-'
    for name in ('read + encode (s)', 'follow-up expression (s)',
                 'peak RSS (MiB)'):
        assert all(number(c) > 0 for c in rows[name]), name
    for name in ('hit rate, all target expressions (%)', 'gIoU (%)'):
        assert all(0 <= number(c) <= 100 for c in rows[name]), name
    assert cells[256, 'slide']['wps'] > 0
    assert len(tables(text)['goal']['rows']) == 3
    assert list(tmp_path.iterdir()) == []  # scenes and outputs deleted
    json.dumps({str(k): v for k, v in cells.items()})  # plain figures


def test_scene_mode_onnx_runtime(tmp_path, capsys):
    """``--model-dir``: the model exported there, then the sliding windows
    through ONNX Runtime beside PyTorch's, in the same table."""
    model_dir = tmp_path / 'onnx'
    work = tmp_path / 'work'
    work.mkdir()
    cells = bm.main([
        'scene', TINY_CONFIG, '--sizes', '256', '--scenes', '1', '--threads',
        '1', '--methods', 'slide', 'slide-onnx', '--model-dir',
        str(model_dir), '--work-dir',
        str(work)
    ])
    text = capsys.readouterr().out
    table = tables(text)['measurement']
    assert table['header'] == [
        'measurement', 'slide 256 px', 'slide-onnx 256 px'
    ]
    rows = table['rows']
    assert rows['model input'] == ['9 windows', '9 windows']
    for name in ('follow-up expression (s)', 'follow-up / first'):
        assert all(number(c) > 0 for c in rows[name]), name
    # the same random weights: the same answers
    for key in ('hit', 'empty', 'giou'):
        assert cells[256, 'slide-onnx'][key] == pytest.approx(
            cells[256, 'slide'][key], abs=1e-6), key
    assert (model_dir / 'text_encoder.onnx').is_file()
    assert f'exported to {model_dir}' in text
    assert list(work.iterdir()) == []
    with pytest.raises(SystemExit):
        bm.parse_args(['scene', TINY_CONFIG, '--methods', 'slide-onnx'])
