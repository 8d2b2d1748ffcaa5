"""The checks of mask_utils and annotation_io, one by one: what passes is
what pycocotools / json read, what is refused says why."""
import json
import random

import numpy as np
import pytest
from pycocotools import mask as coco_mask

import rsrefseg_mm.datasets.mask_utils as mask_utils
from rsrefseg_mm.datasets import (AnnotationError, AnnotationLimitError,
                                  ImagePathError, MaskDecodeError,
                                  MaskLimitError, decode_segmentation,
                                  rle_string_to_counts, validate_segmentation)
from rsrefseg_mm.datasets.annotation_io import (image_file_name, json_depth,
                                                load_json,
                                                read_annotation_bytes)
from rsrefseg_mm.datasets.mask_utils import (MAX_MASK_PIXELS_LIMIT,
                                             check_max_pixels, stated_size)


def runs_of(mask):
    """Column-major run lengths, starting with background."""
    flat = mask.flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return [0] + runs if flat[0] else runs


@pytest.mark.parametrize('chunk', [6, 7, 13, 1 << 20])
def test_chunked_rle_parser_reads_what_pycocotools_wrote(monkeypatch, chunk):
    monkeypatch.setattr(mask_utils, '_RLE_CHUNK', chunk)
    rng = np.random.default_rng(chunk)
    for _ in range(60):
        h, w = rng.integers(1, 90, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = coco_mask.encode(np.asfortranarray(mask))['counts']
        assert rle_string_to_counts(counts.decode()) == runs_of(mask)
        rle = dict(size=[int(h), int(w)], counts=counts.decode())
        np.testing.assert_array_equal(decode_segmentation(rle), mask)


def test_long_runs_and_their_differences():
    """Runs near the largest mask, stored as differences of -+2**28."""
    side = 20_000  # 4e8 pixels < 2**29
    runs = [3, 2**28, 5, 1]
    runs.append(side * side - sum(runs))
    rle = coco_mask.frPyObjects(
        dict(size=[side, side], counts=runs), side, side)
    assert rle_string_to_counts(rle['counts'].decode()) == runs
    assert validate_segmentation(
        rle, max_pixels=MAX_MASK_PIXELS_LIMIT, check_runs=True) == (side, side)


@pytest.mark.parametrize('counts, message', [
    ('0' * 391, 'compressed RLE counts of 391 characters cannot describe a '
     '8x8 mask'),
    ('', 'cannot describe'),
    ('PPPPPPP0', 'run longer than 6 characters at 0'),
    ('0\x00', r"invalid character '\\x00' at 1"),
    ('0é', 'not ASCII'),
    ('P', 'truncated'),
])
def test_malformed_compressed_rle(counts, message):
    rle = dict(size=[8, 8], counts=counts)
    with pytest.raises(MaskDecodeError, match=message):
        validate_segmentation(rle, check_runs=True)


def test_runs_must_cover_the_mask_exactly():
    for runs, message in (([60, 5],
                           'cover more than the 64 pixels of its size 8x8'),
                          ([64, -1, 1], 'negative'),
                          ([1, 2**40], 'run of 1099511627776 pixels')):
        with pytest.raises(MaskDecodeError, match=message):
            decode_segmentation(dict(size=[8, 8], counts=runs))
    with pytest.raises(MaskDecodeError, match='integers'):
        decode_segmentation(dict(size=[8, 8], counts=[32.0, 32]))


def test_mask_size_bounds():
    big = dict(size=[20_000, 20_000], counts='0')
    with pytest.raises(MaskLimitError, match='more than max_mask_pixels'):
        validate_segmentation(big)
    # raised ceiling: the size passes, the runs are checked next
    with pytest.raises(MaskDecodeError, match='cover'):
        validate_segmentation(big, max_pixels=4 * 10**8, check_runs=True)
    with pytest.raises(
            MaskLimitError,
            match='differs from the stated image '
            r'size 30x40 by \(\+17, \+0\)'):
        validate_segmentation(
            dict(size=[47, 40], counts='0'), 30, 40, size_tolerance=16)
    assert validate_segmentation(
        dict(size=[46, 40], counts='0'), 30, 40, size_tolerance=16) == (46, 40)
    with pytest.raises(ValueError, match='max_mask_pixels must be'):
        check_max_pixels(MAX_MASK_PIXELS_LIMIT + 1)
    assert stated_size(None, None) is None
    with pytest.raises(MaskDecodeError, match='positive ints'):
        stated_size(30, '40')
    with pytest.raises(MaskLimitError, match='stated image size'):
        stated_size(10**5, 10**4)


def test_polygon_bounds():
    inside = [[-16.0, 0.0, 40.0, 0.0, 56.0, 46.0]]
    assert validate_segmentation(inside, 30, 40) == (30, 40)
    for poly in ([[-16.5, 0, 40, 0, 40, 30]], [[0, 0, 40, 0, 40, 46.5]]):
        with pytest.raises(MaskLimitError, match='outside its 30x40 mask'):
            validate_segmentation(poly, 30, 40)
    for poly in ([[0, 0, float('nan'), 0, 4,
                   4]], [[0, 0, 'x', 0, 4, 4]], [[0, 0, None, 0, 4,
                                                  4]], [[0, 0, 4, 0, 4]]):
        with pytest.raises(MaskDecodeError, match='polygon'):
            validate_segmentation(poly, 30, 40)
    # a boundary of 20 x 2 x 100 = 4,000 px against max_pixels / 20
    zigzag = [[float(v) for _ in range(20) for v in (0, 0, 100, 100)]]
    assert validate_segmentation(zigzag, 100, 100, max_pixels=10**5)
    with pytest.raises(MaskLimitError, match='more than 2,500 pixels long'):
        validate_segmentation(zigzag, 100, 100, max_pixels=50_000)


@pytest.mark.parametrize('chunk', [1, 2, 5, 1 << 20])
def test_json_depth_ignores_brackets_in_strings(chunk):
    rng = random.Random(chunk)
    texts = ['a[b', 'x\\"]{', '\\\\', '"[', 'é[', '\\\\\\"{']

    def value(level):
        if level > 5 or rng.random() < 0.3:
            return rng.choice(texts + [1, None])
        if rng.random() < 0.5:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {
            rng.choice(texts) + str(i): value(level + 1)
            for i in range(rng.randint(0, 3))
        }

    def depth(v):
        items = v.values() if isinstance(v, dict) else v
        if isinstance(v, (list, dict)):
            return 1 + max([depth(x) for x in items], default=0)
        return 0

    for _ in range(300):
        v = value(0)
        text = json.dumps(v, ensure_ascii=rng.random() < 0.5)
        assert json_depth(text, chunk) == depth(v), text


def test_load_json_names_the_file():
    assert load_json('[' * 100 + ']' * 100, 'f.json') is not None
    for text in ('[' * 101 + ']' * 101, '[' * 100_000 + ']' * 100_000):
        with pytest.raises(
                AnnotationLimitError,
                match='f.json: JSON nested more than 100 deep'):
            load_json(text, 'f.json')
    with pytest.raises(AnnotationError, match='f.json: invalid JSON'):
        load_json('{"a": ', 'f.json')


def test_annotation_file_size_bound(tmp_path):
    path = tmp_path / 'a.json'
    path.write_bytes(b'[1]' * 100)
    assert len(read_annotation_bytes(str(path), 'file', 300)) == 300
    with pytest.raises(
            AnnotationLimitError,
            match='a.json is 300 bytes, more than '
            'max_annotation_bytes=299'):
        read_annotation_bytes(str(path), 'file', 299)
    with pytest.raises(FileNotFoundError, match='nope.json not found'):
        read_annotation_bytes(str(tmp_path / 'nope.json'), 'file')


@pytest.mark.parametrize('name', [
    '/etc/passwd', '\\\\server\\share\\a.jpg', 'C:\\a.jpg', 'c:a.jpg',
    's3://bucket/a.jpg', '../a.jpg', 'a/../../b.jpg', 'a\\..\\..\\b.jpg',
    'a\x00.jpg'
])
def test_image_file_names_outside_the_folder(name):
    with pytest.raises(ImagePathError, match='not a relative path inside'):
        image_file_name(name, 'refs ref_id=3')


@pytest.mark.parametrize('name', ['a.jpg', 'sub/a.jpg', 'a..b.jpg', './a'])
def test_image_file_names_inside_the_folder(name):
    assert image_file_name(name, 'where') == name


def test_phrase_dataset_refuses_ids_outside_the_folder(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import rsrefseg_mm  # noqa: F401
    (tmp_path /
     'output_phrase_train.txt').write_text('1 the road\n../../x the car\n')
    init_default_scope('mmseg')
    with pytest.raises(
            ImagePathError,
            match=r'output_phrase_train.txt:2 image_id=../../x'):
        DATASETS.build(
            dict(
                type='RefSegRSDataset',
                data_root=str(tmp_path),
                split='train',
                pipeline=[]))
    with pytest.raises(AnnotationLimitError, match='max_annotation_bytes=8'):
        DATASETS.build(
            dict(
                type='RefSegRSDataset',
                data_root=str(tmp_path),
                split='train',
                max_annotation_bytes=8,
                pipeline=[]))
