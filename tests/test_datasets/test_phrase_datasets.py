"""RefSegRSDataset and RISBenchDataset on small fixtures."""
import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets import first_category
from rsrefseg_mm.datasets.annotation_io import AnnotationLimitError

PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]


def write_phrase_dataset(root, img_dir, mask_dir, names, ext):
    (root / img_dir).mkdir(parents=True)
    (root / mask_dir).mkdir(parents=True)
    rng = np.random.default_rng(0)
    expected = []
    lines = []
    texts = [
        'the red car on the road', 'a building near the low vegetation',
        'the white van'
    ]
    for k, (name, text) in enumerate(zip(names, texts)):
        h, w = 24 + k, 30
        mask = np.zeros((h, w), np.uint8)
        mask[3 + k:12, 4:20 - k] = 255  # 0/255 as in the releases
        cv2.imwrite(
            str(root / img_dir / (name + ext)),
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        cv2.imwrite(str(root / mask_dir / (name + ext)), mask)
        lines.append(f'{name} {text}')
        expected.append((name, text, (mask > 0).astype(np.uint8)))
    (root / 'output_phrase_train.txt').write_text('\n'.join(lines) + '\n\n')
    return expected


@pytest.mark.parametrize('kind', ['refsegrs', 'risbench'])
def test_phrase_dataset_loads(tmp_path, kind):
    if kind == 'refsegrs':
        exp = write_phrase_dataset(tmp_path, 'images', 'masks',
                                   ['11', '12', '13'], '.tif')
        cfg = dict(type='RefSegRSDataset')
    else:
        # RISBench ids carry the extension ("test_0_0.png <sentence>")
        exp = write_phrase_dataset(tmp_path, 'img_rgb', 'mask',
                                   ['t_0_0.png', 't_0_1.png', 't_1_0.png'], '')
        cfg = dict(type='RISBenchDataset')
    init_default_scope('mmseg')
    ds = DATASETS.build(
        dict(cfg, data_root=str(tmp_path), split='train', pipeline=PIPELINE))
    assert len(ds) == 3
    for i, (name, text, mask) in enumerate(exp):
        out = ds[i]
        meta = out['data_samples'].metainfo
        assert meta['text'] == text and meta['image_id'] == name
        assert meta['ref_id'] == meta['sent_id'] == i
        np.testing.assert_array_equal(
            out['data_samples'].gt_sem_seg.data[0].numpy(), mask)
    if kind == 'refsegrs':
        cats = [ds.get_data_info(i)['category'] for i in range(3)]
        assert cats == ['car', 'building', 'van']


def test_phrase_dataset_errors(tmp_path):
    init_default_scope('mmseg')
    with pytest.raises(FileNotFoundError, match='output_phrase_val.txt'):
        DATASETS.build(
            dict(type='RefSegRSDataset', data_root=str(tmp_path), split='val'))
    (tmp_path / 'output_phrase_train.txt').write_text('17 the car\n18\n')
    with pytest.raises(ValueError, match=r'output_phrase_train.txt:2.*18'):
        DATASETS.build(
            dict(
                type='RefSegRSDataset', data_root=str(tmp_path),
                split='train'))
    # empty once HTML entities are decoded (as the text tower does)
    (tmp_path /
     'output_phrase_train.txt').write_text('17 the car\n18 &nbsp;&nbsp;\n')
    with pytest.raises(
            ValueError,
            match=r'output_phrase_train.txt:2.*18.*'
            'empty after ftfy / HTML'):
        DATASETS.build(
            dict(
                type='RefSegRSDataset', data_root=str(tmp_path),
                split='train'))


def test_mask_size_mismatch_names_files(tmp_path):
    write_phrase_dataset(tmp_path, 'images', 'masks', ['11'], '.tif')
    cv2.imwrite(str(tmp_path / 'masks' / '11.tif'), np.zeros((5, 5), np.uint8))
    init_default_scope('mmseg')
    ds = DATASETS.build(
        dict(
            type='RefSegRSDataset', data_root=str(tmp_path),
            pipeline=PIPELINE))
    with pytest.raises(ValueError, match=r'mask size.*image_id=11'):
        ds[0]


def test_first_category():
    cats = ('road', 'road marking', 'car', 'tree')
    assert first_category('The Road marking next to a car', cats) == \
        'road marking'
    assert first_category('a car by the tree', cats) == 'car'
    assert first_category('nothing here', cats) is None


def test_phrase_file_of_many_tiny_lines_is_refused(tmp_path):
    # 2.5 million samples from a 10 MB file took 4 GB of data infos
    (tmp_path / 'output_phrase_train.txt').write_text('1 a\n' * 300_001)
    init_default_scope('mmseg')
    cfg = dict(type='RefSegRSDataset', data_root=str(tmp_path), split='train')
    with pytest.raises(
            AnnotationLimitError,
            match=r'output_phrase_train.txt: 300,001 phrase lines'
            r'.*max_samples=200,000'):
        DATASETS.build(cfg)
    (tmp_path / 'output_phrase_train.txt').write_text('1 a\n' * 4)
    assert len(DATASETS.build(dict(cfg, max_samples=4))) == 4
    with pytest.raises(AnnotationLimitError, match='4 phrase lines'):
        DATASETS.build(dict(cfg, max_samples=3))
    with pytest.raises(ValueError, match='max_samples'):
        DATASETS.build(dict(cfg, max_samples=0))
