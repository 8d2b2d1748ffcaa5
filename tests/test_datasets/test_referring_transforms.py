"""LoadReferringAnnotations / PackReferringInputs and the mask utilities."""
import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import TRANSFORMS
from pycocotools import mask as coco_mask

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets import (LoadReferringAnnotations,
                                  PackReferringInputs, decode_segmentation,
                                  encode_mask, rle_string_to_counts)
from rsrefseg_mm.datasets.mask_utils import align_mask, segmentation_size


def blob(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    m = (rng.random((h, w)) < 0.4).astype(np.uint8)
    m[5:15, 10:30] = 1
    return m


def test_rle_parser_matches_pycocotools():
    m = blob()
    rle = coco_mask.encode(np.asfortranarray(m))
    runs = rle_string_to_counts(rle['counts'].decode())
    assert sum(runs) == m.size
    # decode the runs by hand (column-major) and compare
    flat = np.concatenate(
        [np.full(r, i % 2, np.uint8) for i, r in enumerate(runs)])
    np.testing.assert_array_equal(flat.reshape(m.shape, order='F'), m)


@pytest.mark.parametrize(
    'form', ['str', 'bytes', 'list_of_str', 'uncompressed', 'two_parts'])
def test_decode_all_rle_forms(form):
    m = blob()
    rle = coco_mask.encode(np.asfortranarray(m))
    if form == 'str':
        seg = dict(size=rle['size'], counts=rle['counts'].decode())
    elif form == 'bytes':
        seg = rle
    elif form == 'list_of_str':
        seg = [dict(size=rle['size'], counts=rle['counts'].decode())]
    elif form == 'uncompressed':
        flat = m.flatten(order='F')
        change = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat[0] == 1:
            counts = [0] + counts
        seg = dict(size=list(m.shape), counts=counts)
    else:  # union of two parts
        a, b = m.copy(), m.copy()
        a[:, 20:] = 0
        b[:, :20] = 0
        seg = [encode_mask(a), encode_mask(b, as_str=False)]
    np.testing.assert_array_equal(decode_segmentation(seg), m)


def test_decode_polygon_needs_size():
    poly = [[2, 2, 20, 2, 20, 12, 2, 12]]
    m = decode_segmentation(poly, 30, 40)
    assert m.shape == (30, 40) and m.dtype == np.uint8
    assert m[5, 5] == 1 and m[20, 30] == 0
    with pytest.raises(ValueError, match='height and width'):
        decode_segmentation(poly)


@pytest.mark.parametrize('seg,msg', [
    (dict(size=[4, 4], counts='0123'), 'cover'),
    (dict(size=[4, 4], counts='\x7f'), 'invalid character'),
    (dict(size=[4, 4], counts='P'), 'truncated'),
    (dict(size=[4, 4], counts=[3, 2]), 'cover'),
    (dict(size=[4, 4], counts=[20, -4]), 'negative'),
    (dict(size=[4], counts='0'), 'size'),
    (dict(counts='0'), 'size'),
    ([[1, 2, 3]], 'polygon'),
    ('abc', 'segmentation must be'),
    ([], 'segmentation must be'),
])
def test_malformed_segmentations(seg, msg):
    with pytest.raises(ValueError, match=msg):
        decode_segmentation(seg, 4, 4)


def test_load_from_rle_and_size_check():
    m = blob()
    t = LoadReferringAnnotations()
    res = t(
        dict(
            segmentation=encode_mask(m),
            ori_shape=(30, 40),
            seg_fields=[],
            ref_id=5))
    np.testing.assert_array_equal(res['gt_seg_map'], m)
    assert res['seg_fields'] == ['gt_seg_map']
    with pytest.raises(ValueError, match=r'mask size.*ref_id=5.*a\.jpg'):
        t(
            dict(
                segmentation=encode_mask(m),
                ori_shape=(31, 40),
                seg_fields=[],
                ref_id=5,
                img_path='/x/a.jpg'))
    with pytest.raises(ValueError, match=r'malformed.*ref_id=6'):
        t(
            dict(
                segmentation=dict(size=[30, 40], counts='0'),
                ori_shape=(30, 40),
                seg_fields=[],
                ref_id=6))


#: A 3x4 mask and its alignment to a 4x3 image (one row more, one column
#: fewer), padded with 255 or 0.
MASK_3X4 = np.array([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], np.uint8)
ALIGNED_4X3 = {
    255: [[0, 1, 1], [1, 1, 0], [0, 0, 1], [255, 255, 255]],
    0: [[0, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]],
}


@pytest.mark.parametrize('pad_value', [None, 0])
def test_mask_aligned_within_tolerance(pad_value):
    t = LoadReferringAnnotations(size_tolerance=1, pad_value=pad_value)
    res = t(
        dict(segmentation=encode_mask(MASK_3X4), ori_shape=(4, 3), ref_id=5))
    expected = ALIGNED_4X3[255 if pad_value is None else pad_value]
    np.testing.assert_array_equal(res['gt_seg_map'], np.array(expected))
    assert res['gt_seg_map'].dtype == np.uint8


def test_tolerance_from_the_sample():
    """``size_tolerance=None`` takes the dataset's ``mask_size_tolerance``;
    an explicit value wins; neither means equal sizes."""
    sample = dict(segmentation=encode_mask(MASK_3X4), ori_shape=(4, 3))
    res = LoadReferringAnnotations()(dict(sample, mask_size_tolerance=1))
    np.testing.assert_array_equal(res['gt_seg_map'], ALIGNED_4X3[255])
    with pytest.raises(ValueError, match='size_tolerance=0'):
        LoadReferringAnnotations(size_tolerance=0)(
            dict(sample, mask_size_tolerance=1))
    with pytest.raises(ValueError, match='size_tolerance=0.*aligned with'):
        LoadReferringAnnotations()(dict(sample))
    # check_size=False keeps the decoded size
    res = LoadReferringAnnotations(check_size=False)(dict(sample))
    assert res['gt_seg_map'].shape == (3, 4)


def test_beyond_tolerance_names_sample_and_sizes():
    t = LoadReferringAnnotations(size_tolerance=16)
    with pytest.raises(ValueError) as err:
        t(
            dict(
                segmentation=encode_mask(blob(30, 40)),
                ori_shape=(30, 57),
                ref_id=7,
                img_path='/x/b.jpg'))
    msg = str(err.value)
    assert 'mask size (30, 40) differs from image size (30, 57)' in msg
    assert '(+0, +17) px, more than size_tolerance=16' in msg
    assert 'ref_id=7' in msg and 'b.jpg' in msg
    with pytest.raises(ValueError, match='size_tolerance must be'):
        LoadReferringAnnotations(size_tolerance=-1)


def test_align_mask_and_segmentation_size():
    m = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(
        align_mask(m, (2, 5), 9), [[0, 1, 2, 3, 9], [4, 5, 6, 7, 9]])
    assert align_mask(m, (3, 4), 9) is not m
    rle = encode_mask(blob(30, 40))
    assert segmentation_size(rle) == (30, 40)
    assert segmentation_size([rle]) == (30, 40)
    poly = [[2, 2, 20, 2, 20, 12]]
    assert segmentation_size(poly, 31, 41) == (31, 41)
    assert segmentation_size(poly) is None
    with pytest.raises(ValueError):
        segmentation_size({'counts': 'x'})


@pytest.mark.parametrize('values,mode,expected', [
    ([0, 255], 'auto', [0, 1]),
    ([0, 1], 'auto', [0, 1]),
    ([0, 1, 255], 'auto', [0, 1, 255]),
    ([0, 1, 255], 'binary', [0, 1, 1]),
    ([0, 128, 255], 'auto', [0, 1, 1]),
])
def test_load_mask_file_modes(tmp_path, values, mode, expected):
    m = np.zeros((6, 9), np.uint8)
    for i, v in enumerate(values):
        m[i * 2:(i + 1) * 2] = v
    path = str(tmp_path / 'm.png')
    cv2.imwrite(path, m)
    res = LoadReferringAnnotations(mask_mode=mode)(
        dict(seg_map_path=path, ori_shape=(6, 9), seg_fields=[]))
    want = np.zeros_like(m)
    for i, v in enumerate(expected):
        want[i * 2:(i + 1) * 2] = v
    np.testing.assert_array_equal(res['gt_seg_map'], want)


def test_label_mode_rejects_other_values(tmp_path):
    path = str(tmp_path / 'm.png')
    cv2.imwrite(path, np.full((4, 4), 7, np.uint8))
    with pytest.raises(ValueError, match=r'm\.png.*outside'):
        LoadReferringAnnotations(mask_mode='label')(
            dict(seg_map_path=path, seg_fields=[]))


def test_missing_and_corrupt_mask_file(tmp_path):
    t = LoadReferringAnnotations()
    with pytest.raises(FileNotFoundError, match='nope.tif'):
        t(dict(seg_map_path=str(tmp_path / 'nope.tif'), seg_fields=[]))
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'\x89PNG garbage')
    with pytest.raises(ValueError, match='bad.png'):
        t(dict(seg_map_path=str(bad), seg_fields=[]))
    with pytest.raises(KeyError, match='no mask source'):
        t(dict(seg_fields=[], ref_id=1))


def test_in_memory_mask_keeps_ignore():
    m = np.zeros((5, 5), np.uint8)
    m[1, 1] = 1
    m[2, 2] = 255
    res = LoadReferringAnnotations()(
        dict(referring_mask=m, ori_shape=(5, 5), seg_fields=['gt_seg_map']))
    assert res['gt_seg_map'][1, 1] == 1 and res['gt_seg_map'][2, 2] == 255
    assert res['seg_fields'] == ['gt_seg_map']


def test_pack_referring_inputs_meta_keys():
    init_default_scope('mmseg')
    pack = TRANSFORMS.build(dict(type='PackReferringInputs'))
    assert isinstance(pack, PackReferringInputs)
    res = dict(
        img=np.zeros((6, 7, 3), np.uint8),
        gt_seg_map=np.ones((6, 7), np.uint8),
        text='the red car',
        ref_id=1,
        ann_id=2,
        image_id=3,
        sent_id=4,
        category='car',
        img_shape=(6, 7),
        ori_shape=(6, 7),
        unrelated='x')
    out = pack(res)
    meta = out['data_samples'].metainfo
    for k in ('text', 'ref_id', 'ann_id', 'image_id', 'sent_id', 'category',
              'ori_shape', 'img_shape'):
        assert k in meta, k
    assert 'unrelated' not in meta
    assert tuple(out['inputs'].shape) == (3, 6, 7)
    assert tuple(out['data_samples'].gt_sem_seg.data.shape) == (1, 6, 7)
    with pytest.raises(KeyError, match='expression'):
        pack(dict(img=np.zeros((2, 2, 3), np.uint8), text=''))
