"""SyntheticReferringDataset: determinism, correct targets, disjoint splits."""
import hashlib
import pickle

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets import SyntheticReferringDataset
from rsrefseg_mm.datasets.synthetic_scenes import (COLORS, SHAPES, object_mask,
                                                   resolve_expression)
from helpers import REPO

CFG = REPO / 'configs/_base_/datasets/synthetic_referring.py'
RELATIONS = ('leftmost', 'rightmost', 'topmost', 'bottommost', 'largest',
             'smallest')


def referents(text, objects):
    """Test-side parser, written independently of the dataset's."""
    words = text.split()
    assert words[0] == 'the', text
    rel = words[1] if words[1] in RELATIONS else None
    rest = words[2:] if rel else words[1:]
    color = rest[0] if rest[0] in COLORS else None
    noun = rest[-1]
    assert noun in SHAPES or noun == 'object', text
    group = [
        i for i, o in enumerate(objects)
        if (color is None or o['color'] == color) and (
            noun == 'object' or o['shape'] == noun)
    ]
    if rel is None:
        return group
    value = {
        'leftmost': lambda o: -o['cx'],
        'rightmost': lambda o: o['cx'],
        'topmost': lambda o: -o['cy'],
        'bottommost': lambda o: o['cy'],
        'largest': lambda o: o['size'],
        'smallest': lambda o: -o['size'],
    }[rel]
    best = max(value(objects[i]) for i in group)
    assert len(group) >= 2, f'relation used on a unique group: {text}'
    return [i for i in group if value(objects[i]) == best]


def nearest_color(rgb):
    names = list(COLORS)
    d = [np.abs(np.array(COLORS[n]) - rgb).sum() for n in names]
    return names[int(np.argmin(d))]


def test_deterministic_and_seeded():
    a = SyntheticReferringDataset(num_samples=6, seed=3)
    b = SyntheticReferringDataset(num_samples=6, seed=3)
    c = SyntheticReferringDataset(num_samples=6, seed=4)
    for i in range(6):
        ia, ib = a.get_data_info(i), b.get_data_info(i)
        np.testing.assert_array_equal(ia['img'], ib['img'])
        np.testing.assert_array_equal(ia['gt_seg_map'], ib['gt_seg_map'])
        assert ia['text'] == ib['text']
    assert any(not np.array_equal(
        a.get_data_info(i)['img'],
        c.get_data_info(i)['img']) for i in range(6))


def test_target_is_the_described_object():
    ds = SyntheticReferringDataset(num_samples=80, seed=0)
    types = set()
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        scene = ds.get_scene(i)
        objs, (target, ) = scene['objects'], scene['targets']
        assert len(objs) >= 3
        # the expression singles out exactly the target
        assert referents(info['text'], objs) == [target], info['text']
        # the mask is the target object, and nothing else
        mask = info['gt_seg_map']
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, object_mask(objs[target], 128))
        # the pixels under the mask have the target's colour
        rgb = info['img'][mask.astype(bool)].mean(0)[::-1]
        assert nearest_color(rgb) == objs[target]['color']
        for name in COLORS:
            if name in info['text'].split():
                assert nearest_color(rgb) == name
        assert info['category'] == objs[target]['shape']
        # another object shares the target's colour or shape
        assert any(o['color'] == objs[target]['color']
                   or o['shape'] == objs[target]['shape']
                   for j, o in enumerate(objs) if j != target)
        # object size: 15-35 % of the side (shrunk a little when crowded)
        assert 0.07 * 128 <= objs[target]['size'] <= 0.35 * 128 + 1e-6
        types.add(info['expr_type'])
    assert types == {'attribute', 'position', 'size'}


def test_data_info_keys_and_compact_storage():
    ds = SyntheticReferringDataset(num_samples=4, img_size=96)
    info = ds.get_data_info(1)
    assert info['img'].shape == (96, 96, 3) and info['img'].dtype == np.uint8
    assert info['img_shape'] == info['ori_shape'] == (96, 96)
    assert info['seg_fields'] == ['gt_seg_map']
    for k in ('text', 'ref_id', 'ann_id', 'image_id', 'sent_id', 'category'):
        assert k in info
    assert 'img_path' not in info
    # data_list holds scene parameters, not pixels
    assert len(pickle.dumps(ds.data_list)) < 4 * 2000


def test_splits_are_disjoint():

    def hashes(split, n):
        ds = SyntheticReferringDataset(split=split, num_samples=n)
        return {
            hashlib.md5(ds.get_data_info(i)['img'].tobytes()).hexdigest()
            for i in range(n)
        }

    tr, va, te = hashes('train', 60), hashes('val', 30), hashes('test', 30)
    assert len(tr) == 60 and len(va) == 30 and len(te) == 30
    assert not tr & va and not tr & te and not va & te


def test_shuffle_expressions_changes_pairing_only():
    base = SyntheticReferringDataset(num_samples=40, seed=1)
    shuf = SyntheticReferringDataset(
        num_samples=40, seed=1, shuffle_expressions=True)
    changed = 0
    for i in range(40):
        b, s = base.get_data_info(i), shuf.get_data_info(i)
        np.testing.assert_array_equal(b['img'], s['img'])
        np.testing.assert_array_equal(b['gt_seg_map'], s['gt_seg_map'])
        src = s['text_source']
        assert src != i
        assert s['text'] == base.get_data_info(src)['text']
        changed += s['text'] != b['text']
    assert changed >= 30


def test_expression_types_and_arguments():
    ds = SyntheticReferringDataset(
        num_samples=20, expression_types=('attribute', ))
    assert {ds.get_data_info(i)['expr_type']
            for i in range(20)} == {'attribute'}
    for bad in (dict(split='testA'), dict(num_objects=(2, 4)),
                dict(object_size=(0.2, 0.9)),
                dict(expression_types=('colour', )), dict(num_samples=0)):
        with pytest.raises(ValueError):
            SyntheticReferringDataset(**bad)


@pytest.mark.parametrize('scale', [(128, 128), (160, 160)])
def test_config_pipelines(scale):
    cfg = Config.fromfile(str(CFG))
    assert cfg.crop_size == (128, 128)
    init_default_scope('mmseg')
    for split in ('train', 'test'):
        dcfg = cfg[f'{split}_dataloader'].dataset
        dcfg.num_samples = 3
        dcfg.pipeline[0].scale = scale
        ds = DATASETS.build(dcfg)
        out = ds[0]
        assert tuple(out['inputs'].shape) == (3, ) + scale
        gt = out['data_samples'].gt_sem_seg.data
        meta = out['data_samples'].metainfo
        assert meta['text'] and meta['category'] in SHAPES
        if split == 'train':
            assert tuple(gt.shape[1:]) == scale
        else:  # ground truth kept at the original size for the metric
            assert tuple(gt.shape[1:]) == (128, 128)
            np.testing.assert_array_equal(gt[0].numpy(),
                                          ds.get_data_info(0)['gt_seg_map'])


def test_generalized_referring_targets():
    ds = SyntheticReferringDataset(
        num_samples=120, seed=2, no_target_ratio=0.3, multi_target_ratio=0.3)
    kinds = {'none': 0, 'multi': 0}
    for i in range(len(ds)):
        info, scene = ds.get_data_info(i), ds.get_scene(i)
        objs, targets = scene['objects'], scene['targets']
        mask = info['gt_seg_map']
        want = np.zeros_like(mask)
        for t in targets:
            want |= object_mask(objs[t], 128)
        np.testing.assert_array_equal(mask, want)
        if info['expr_type'] == 'none':
            kinds['none'] += 1
            assert targets == [] and mask.sum() == 0
            assert info['category'] == 'none'
            # worded like a single-target expression, and nothing matches
            assert info['text'].startswith('the ')
            assert referents(info['text'], objs) == []
        elif info['expr_type'] == 'multi':
            kinds['multi'] += 1
            assert info['text'].startswith('all the ')
            assert len(targets) >= 2
            # independent reading of "all the <color> <shape|object>s"
            # ("crosses")
            words = info['text'].split()[2:]
            color = words[0] if words[0] in COLORS else None
            noun = words[-1][:-2] if words[-1].endswith('ses') else \
                words[-1][:-1]
            assert targets == [
                j for j, o in enumerate(objs)
                if (color is None or o['color'] == color) and (
                    noun == 'object' or o['shape'] == noun)
            ]
        else:
            assert len(targets) == 1
            assert referents(info['text'], objs) == targets
        assert resolve_expression(info['text'], objs) == targets
    # the ratios are honoured (120 draws; multi falls back where no group)
    assert 20 <= kinds['none'] <= 55 and 15 <= kinds['multi'] <= 55


def test_no_target_expressions_are_mostly_hard():
    ds = SyntheticReferringDataset(num_samples=80, seed=5, no_target_ratio=1.0)
    hard = 0
    for i in range(len(ds)):
        scene, text = ds.get_scene(i), ds.get_data_info(i)['text']
        colors = {o['color'] for o in scene['objects']}
        shapes = {o['shape'] for o in scene['objects']}
        words = text.split()
        hard += words[1] in colors and words[-1] in shapes
    assert hard >= 0.5 * len(ds)


def test_zero_ratios_keep_the_single_target_scenes():
    a = SyntheticReferringDataset(num_samples=10, seed=7)
    b = SyntheticReferringDataset(
        num_samples=10, seed=7, no_target_ratio=0.0, multi_target_ratio=0.0)
    for i in range(10):
        assert a.get_scene(i) == b.get_scene(i)
    with pytest.raises(ValueError, match='no_target_ratio'):
        SyntheticReferringDataset(no_target_ratio=0.7, multi_target_ratio=0.5)
