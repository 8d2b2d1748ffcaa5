"""SyntheticSceneWindowDataset: windows of large scenes, their expressions
and ground truth."""
import numpy as np
import pytest
from mmseg.datasets import BaseSegDataset

from rsrefseg_mm.datasets import SyntheticSceneWindowDataset
from rsrefseg_mm.datasets.synthetic_large_scene import (render_block,
                                                        scene_background)
from rsrefseg_mm.datasets.synthetic_scenes import (COLORS, SINGULAR,
                                                   resolve_expression)


@pytest.fixture(scope='module')
def windows():
    return SyntheticSceneWindowDataset(num_samples=120, seed=3)


def _raw(ds, idx):
    """The sample's scene parameters (before rendering)."""
    return BaseSegDataset.get_data_info(ds, idx)


def _window_objects(ds, idx):
    """Scene objects, each one's share of pixels inside the window (from
    a drawing of the whole scene) and the window's object labels."""
    raw = _raw(ds, idx)
    scene = raw['scene']
    lum, tint = scene_background(scene)
    _, labels = render_block(scene, 0, scene['size'], lum, tint)
    y, x = raw['offset']
    inside = labels[y:y + ds.window, x:x + ds.window]
    share = [(inside == i + 1).sum() / max((labels == i + 1).sum(), 1)
             for i in range(len(scene['objects']))]
    _, window_labels = render_block(
        scene, y, y + ds.window, lum, tint, cols=(x, x + ds.window))
    return scene['objects'], np.array(share), window_labels


def test_ground_truth_is_the_visible_referents(windows):
    kinds = set()
    for idx in range(len(windows)):
        info = windows.get_data_info(idx)
        objects, share, labels = _window_objects(windows, idx)
        gt = info['gt_seg_map']
        assert gt.shape == info['img'].shape[:2] == (128, 128)
        seen = [objects[i] for i in np.flatnonzero(share > 0)]
        if info['category'] == 'none':
            # singular and plural: "all the" does not tell a referent is there
            kinds.add(
                'none, plural' if info['text'].startswith('all ') else 'none')
            # not even a cut piece of the named objects is in the window
            assert resolve_expression(info['text'], seen) == []
            assert not (gt == 1).any()
            continue
        kinds.add(info['expr_type'])
        matches = set(resolve_expression(info['text'], objects))
        clear = {i for i in matches if share[i] >= windows.min_visible}
        cut = {i for i in matches if 0 < share[i] < windows.min_visible}
        assert clear, info['text']
        if not info['text'].startswith('all '):
            assert len(clear) == 1
        np.testing.assert_array_equal(gt == 1,
                                      np.isin(labels, [i + 1 for i in clear]))
        np.testing.assert_array_equal(gt == 255,
                                      np.isin(labels, [i + 1 for i in cut]))
        # the referents' pixels have the named colour (BGR image)
        colour = np.array(COLORS[objects[min(clear)]['color']][::-1])
        mean = info['img'][gt == 1].mean(0)
        assert np.abs(mean - colour).max() < 20, (info['text'], mean)
    assert kinds == {'none', 'none, plural', 'attribute', 'multi'}


def test_windows_are_crops_of_the_scene(windows):
    """The window's objects and background are those of the whole scene at
    its offset (even offsets: the drawing's rounding is the scene's)."""
    for idx in range(40):
        raw = _raw(windows, idx)
        y, x = raw['offset']
        if y % 2 or x % 2:
            continue
        scene = raw['scene']
        lum, tint = scene_background(scene)
        whole, labels = render_block(scene, 0, scene['size'], lum, tint)
        part, part_labels = render_block(
            scene, y, y + 128, lum, tint, cols=(x, x + 128))
        np.testing.assert_array_equal(part_labels, labels[y:y + 128,
                                                          x:x + 128])
        on_objects = part_labels > 0
        # object pixels: colour + noise; background: the same field
        diff = np.abs(
            part.astype(int) - whole[:, y:y + 128, x:x + 128].astype(int))
        assert np.median(diff[:, ~on_objects]) < 20
        assert np.median(diff[:, on_objects]) < 15


def test_ratios_and_determinism():
    none = SyntheticSceneWindowDataset(num_samples=30, no_target_ratio=1.0)
    assert {_raw(none, i)['category'] for i in range(30)} == {'none'}
    some = SyntheticSceneWindowDataset(num_samples=30, no_target_ratio=0.0)
    # a window always shows at least one object clearly, so every window
    # then has a referent
    assert 'none' not in {_raw(some, i)['category'] for i in range(30)}
    again = SyntheticSceneWindowDataset(num_samples=30, no_target_ratio=0.0)
    a, b = some.get_data_info(7), again.get_data_info(7)
    assert a['text'] == b['text']
    np.testing.assert_array_equal(a['img'], b['img'])
    val = SyntheticSceneWindowDataset(
        split='val', num_samples=30, no_target_ratio=0.0)
    assert [_raw(val, i)['text'] for i in range(30)] != \
        [_raw(some, i)['text'] for i in range(30)]


def _hardness(ds, idx):
    """Whether no-target window ``idx`` names a colour and a shape that are
    both in the window (pieces count), and whether it has such a pair."""
    objects, _, labels = _window_objects(ds, idx)
    seen = [objects[i - 1] for i in np.unique(labels[labels > 0])]
    words = _raw(ds, idx)['text'].split()
    assert not resolve_expression(' '.join(words), seen)
    colours = {o['color'] for o in seen}
    shapes = {o['shape'] for o in seen}
    shape = SINGULAR.get(words[-1], words[-1])
    possible = len(colours) * len(shapes) > len({(o['color'], o['shape'])
                                                 for o in seen})
    return words[-2] in colours and shape in shapes, possible


def test_hard_ratio():
    """``hard_ratio`` 1: every no-target expression names a colour and a
    shape of the window (never together) where the window has such a pair;
    0: drawn among all no-target expressions, most of which are not
    hard."""
    hard = {}
    for ratio in (1.0, 0.0):
        ds = SyntheticSceneWindowDataset(
            num_samples=24, no_target_ratio=1.0, hard_ratio=ratio, seed=5)
        hard[ratio] = [_hardness(ds, i) for i in range(24)]
    assert all(h for h, possible in hard[1.0] if possible)
    assert sum(possible for _, possible in hard[1.0]) >= 12
    assert sum(h for h, _ in hard[0.0]) <= 12


@pytest.mark.parametrize('kwargs', [
    dict(split='dev'),
    dict(num_samples=0),
    dict(window=16),
    dict(no_target_ratio=1.5),
    dict(min_visible=0.0),
    dict(hard_ratio=-0.1),
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticSceneWindowDataset(**kwargs)
