"""RRSISDDataset on a REFER-layout fixture (see conftest.py)."""
import json
import logging
import pickle
from contextlib import contextmanager

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from helpers import REPO, recanvas_image

TRAIN_PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]
# as in configs/_base_/datasets/rrsisd.py: gt decoded after Resize
TEST_PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]


def build(root, split, pipeline=TRAIN_PIPELINE, **kwargs):
    init_default_scope('mmseg')
    return DATASETS.build(
        dict(
            type='RRSISDDataset',
            data_root=str(root),
            split=split,
            pipeline=pipeline,
            **kwargs))


def key_of(meta, split):
    return (split, meta['ref_id'], meta['sent_id'])


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_counts_and_masks(refer_fixture, split):
    ds = build(refer_fixture['root'], split)
    assert len(ds) == refer_fixture['counts'][split]
    seen = set()
    for i in range(len(ds)):
        out = ds[i]
        meta = out['data_samples'].metainfo
        exp = refer_fixture['samples'][key_of(meta, split)]
        seen.add(key_of(meta, split))
        assert meta['text'] == exp['text']
        assert meta['ann_id'] == exp['ann_id']
        assert meta['image_id'] == exp['image_id']
        assert meta['category'] == exp['category']
        assert meta['img_path'].endswith(exp['file_name'])
        gt = out['data_samples'].gt_sem_seg.data[0].numpy()
        assert gt.shape == exp['shape']
        np.testing.assert_array_equal(gt, exp['mask'])
        assert tuple(out['inputs'].shape) == (3, ) + exp['shape']
    assert len(seen) == len(ds)  # one sample per (ref, sentence)


def test_counts_match_splits(refer_fixture):
    assert refer_fixture['counts'] == {'train': 4, 'val': 2, 'test': 3}


def test_test_pipeline_keeps_gt_at_original_size(refer_fixture):
    ds = build(refer_fixture['root'], 'test', TEST_PIPELINE, test_mode=True)
    out = ds[0]
    meta = out['data_samples'].metainfo
    exp = refer_fixture['samples'][key_of(meta, 'test')]
    assert tuple(out['inputs'].shape[1:]) == (64, 64)
    assert tuple(meta['ori_shape']) == exp['shape']
    np.testing.assert_array_equal(
        out['data_samples'].gt_sem_seg.data[0].numpy(), exp['mask'])


def test_lazy_init_and_serialization(refer_fixture):
    ds = build(refer_fixture['root'], 'train', lazy_init=True)
    ds.full_init()
    assert ds.serialize_data and len(ds) == 4
    info = ds.get_data_info(0)
    assert info['segmentation'] is not None and info['text']
    ds2 = build(refer_fixture['root'], 'train', serialize_data=False)
    assert pickle.loads(pickle.dumps(ds2.data_list))  # picklable infos
    assert ds.metainfo['classes'] == ('background', 'target')


def write_rsrefseg_jsonl(fixture, split, path):
    """RSRefSeg's converter format (no ref_id / sent_id keys)."""
    anns = {
        a['id']: a
        for a in json.load(open(fixture['root'] /
                                'instances.json'))['annotations']
    }
    names = {0: 'airplane', 1: 'ship', 2: 'storagetank'}
    with open(path, 'w') as f:
        for ref in fixture['refs']:
            if ref['split'] != split:
                continue
            ann = anns[ref['ann_id']]
            for sent in ref['sentences']:
                f.write(
                    json.dumps(
                        dict(
                            split=split,
                            image_id=ref['image_id'],
                            sent=sent['sent'],
                            file_name=ref['file_name'],
                            category_id=ref['category_id'],
                            category_name=names[ref['category_id']],
                            ann_id=ref['ann_id'],
                            bbox=ann['bbox'],
                            segmentation=ann['segmentation'],
                            area=ann['area'])) + '\n')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_jsonl_gives_same_samples(refer_fixture, tmp_path, split):
    jsonl = tmp_path / f'rrsisd_{split}.jsonl'
    write_rsrefseg_jsonl(refer_fixture, split, jsonl)
    ds_refer = build(refer_fixture['root'], split)
    ds_jsonl = build(refer_fixture['root'], split, ann_file=str(jsonl))
    assert len(ds_jsonl) == len(ds_refer)
    for i in range(len(ds_refer)):
        a, b = ds_refer[i], ds_jsonl[i]
        ma, mb = a['data_samples'].metainfo, b['data_samples'].metainfo
        for k in ('text', 'ann_id', 'image_id', 'category', 'img_path'):
            assert ma[k] == mb[k], k
        assert mb['ref_id'] == mb['ann_id']  # documented fallback
        np.testing.assert_array_equal(a['data_samples'].gt_sem_seg.data,
                                      b['data_samples'].gt_sem_seg.data)


def test_jsonl_wrong_split_names_available_splits(refer_fixture, tmp_path):
    jsonl = tmp_path / 'rrsisd_test.jsonl'
    write_rsrefseg_jsonl(refer_fixture, 'test', jsonl)
    with pytest.raises(ValueError, match=r"split='val'.*'test': 3"):
        build(refer_fixture['root'], 'val', ann_file=str(jsonl))


def _drop_split(src, dst, keep_first=0):
    """Copy a jsonl, removing the ``split`` key from lines after the first
    ``keep_first``."""
    lines = open(src).read().splitlines()
    with open(dst, 'w') as f:
        for n, line in enumerate(lines):
            item = json.loads(line)
            if n >= keep_first:
                item.pop('split')
            f.write(json.dumps(item) + '\n')


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_jsonl_line_without_split_is_an_error(refer_fixture, tmp_path, split):
    """Such a line used to enter every split (leakage); now every split
    refuses the file, naming the file and line."""
    full = tmp_path / 'rrsisd_test.jsonl'
    write_rsrefseg_jsonl(refer_fixture, 'test', full)
    jsonl = tmp_path / 'no_split.jsonl'
    _drop_split(full, jsonl, keep_first=1)
    with pytest.raises(ValueError) as err:
        build(refer_fixture['root'], split, ann_file=str(jsonl))
    assert f'{jsonl}:2: the line has no "split" key' in str(err.value)
    assert 'default_split' in str(err.value)


def test_jsonl_default_split_assigns_lines(refer_fixture, tmp_path):
    full = tmp_path / 'rrsisd_test.jsonl'
    write_rsrefseg_jsonl(refer_fixture, 'test', full)
    jsonl = tmp_path / 'no_split.jsonl'
    _drop_split(full, jsonl)
    ds = build(
        refer_fixture['root'],
        'test',
        ann_file=str(jsonl),
        default_split='test')
    assert len(ds) == refer_fixture['counts']['test']
    # the lines belong to test only: train finds none (and says so)
    with pytest.raises(ValueError, match=r"no samples for split='train'"):
        build(
            refer_fixture['root'],
            'train',
            ann_file=str(jsonl),
            default_split='test')
    with pytest.raises(ValueError, match='default_split must be'):
        build(
            refer_fixture['root'],
            'test',
            ann_file=str(jsonl),
            default_split='testA')


def test_jsonl_unknown_split_value(refer_fixture, tmp_path):
    jsonl = tmp_path / 'typo.jsonl'
    write_rsrefseg_jsonl(refer_fixture, 'test', jsonl)
    text = open(jsonl).read().replace('"split": "test"', '"split": "tset"', 1)
    open(jsonl, 'w').write(text)
    with pytest.raises(ValueError, match=rf"{jsonl}:1: unknown split 'tset'"):
        build(refer_fixture['root'], 'test', ann_file=str(jsonl))


def test_bad_split_name(refer_fixture):
    with pytest.raises(ValueError, match='split must be one of'):
        build(refer_fixture['root'], 'testA')


# ------------------------------------------------------------ bad input
def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'refs\(unc\)\.p'):
        build(tmp_path, 'train')


def test_corrupt_annotation_file(refer_copy):
    (refer_copy['root'] / 'refs(unc).p').write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match=r'refs\(unc\)\.p'):
        build(refer_copy['root'], 'train')


def test_corrupt_instances_file(refer_copy):
    (refer_copy['root'] / 'instances.json').write_text('{"annotations": [')
    with pytest.raises(ValueError, match='instances.json'):
        build(refer_copy['root'], 'train')


def test_missing_instances_file(refer_copy):
    (refer_copy['root'] / 'instances.json').unlink()
    with pytest.raises(FileNotFoundError, match='instances.json'):
        build(refer_copy['root'], 'train')


def _rewrite_refs(root, fn):
    path = root / 'refs(unc).p'
    refs = pickle.load(open(path, 'rb'))
    fn(refs)
    pickle.dump(refs, open(path, 'wb'))


def test_ref_with_absent_ann_id(refer_copy):

    def fn(refs):
        refs[1]['ann_id'] = 12345

    _rewrite_refs(refer_copy['root'], fn)
    with pytest.raises(KeyError, match=r'ref_id=901.*ann_id=12345'):
        build(refer_copy['root'], 'train')


@pytest.mark.parametrize('text', [
    '   ', '&nbsp;', '&amp;nbsp; &#32;', '\u00a0\u3000', '...', '&quot;?&quot;'
])
def test_empty_expression(refer_copy, text):
    """Empty after the text tower's ftfy / HTML / whitespace clean-up."""

    def fn(refs):
        refs[0]['sentences'][1]['sent'] = text

    _rewrite_refs(refer_copy['root'], fn)
    with pytest.raises(
            ValueError,
            match=r'refs\(unc\).p ref_id=900 '
            r'sent_id=2001.*expression is empty'):
        build(refer_copy['root'], 'train')


def _rewrite_ann(root, ann_id, seg):
    path = root / 'instances.json'
    inst = json.load(open(path))
    for a in inst['annotations']:
        if a['id'] == ann_id:
            a['segmentation'] = seg
    json.dump(inst, open(path, 'w'))


@pytest.mark.parametrize('counts', ['\x7f\x7f', 'PPPP', '0123'])
def test_malformed_rle_named_at_load(refer_copy, counts):
    # structurally fine (a dict with size + counts) but the runs are wrong:
    # caught when decoding, with the ref named
    _rewrite_ann(refer_copy['root'], 500, [{
        'size': [40, 48],
        'counts': counts
    }])
    ds = build(refer_copy['root'], 'train')
    idx = [i for i in range(len(ds))
           if ds.get_data_info(i)['ref_id'] == 900][0]
    with pytest.raises(ValueError, match=r'ref_id=900'):
        ds[idx]


def test_malformed_segmentation_structure(refer_copy):
    _rewrite_ann(refer_copy['root'], 500, {'counts': 'abc'})
    with pytest.raises(ValueError, match=r'ref_id=900.*malformed'):
        build(refer_copy['root'], 'train')


def test_missing_image_names_file(refer_copy):
    (refer_copy['root'] / 'images/rrsisd/JPEGImages/00100.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=r'1 of 3 image files.*00100'):
        build(refer_copy['root'], 'train')
    # without the check at build, reading the sample names it
    ds = build(refer_copy['root'], 'train', check_images=False)
    with pytest.raises(FileNotFoundError, match='00100.jpg'):
        ds[0]


@pytest.mark.parametrize(
    'content, error',
    [
        (b'garbage' * 10, OSError),  # mmcv: decoder returns None (assert)
        (b'', OSError),  # mmcv: cv2.error from imdecode, no file name
        ('truncated', OSError),  # first 100 bytes of a real JPEG
        (None, FileNotFoundError),  # deleted
    ])
def test_bad_image_names_file_and_sample(refer_copy, content, error):
    path = refer_copy['root'] / 'images/rrsisd/JPEGImages/00100.jpg'
    if content is None:
        path.unlink()
    elif content == 'truncated':
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(content)
    # the check at build refuses a deleted file (test above); an unreadable
    # one is left to the loader, which names the sample
    ds = build(refer_copy['root'], 'train', check_images=content is not None)
    idx = next(
        i for i in range(len(ds))
        if ds.get_data_info(i)['img_path'].endswith('00100.jpg'))
    info = ds.get_data_info(idx)
    with pytest.raises(error) as exc:
        ds[idx]
    msg = str(exc.value)
    assert '00100.jpg' in msg
    assert f"ref_id={info['ref_id']}" in msg
    assert f"sent_id={info['sent_id']}" in msg


def test_mask_image_size_mismatch(refer_copy):
    import cv2
    path = refer_copy['root'] / 'images/rrsisd/JPEGImages/00100.jpg'
    cv2.imwrite(str(path), np.zeros((20, 20, 3), np.uint8))
    # found when the dataset is built ...
    with pytest.raises(ValueError, match=r'ref_id=900.*00100.*20x20.*40x48'):
        build(refer_copy['root'], 'train')
    # ... or when the sample is read
    ds = build(refer_copy['root'], 'train', check_images=False)
    with pytest.raises(ValueError, match=r'mask size.*ref_id=900.*00100'):
        ds[0]


# ---------------------------------------------------- RRSIS-D as downloaded
@contextmanager
def warnings_logged():
    """Collect the warnings logged through mmengine's current logger."""
    name = 'rrsisd_download_test'
    logger = MMLogger.get_instance(name)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    try:
        MMLogger._instance_dict.move_to_end(name)
        yield records
    finally:
        logger.removeHandler(handler)


def aligned_by_hand(mask, file_name):
    """The mask of an "as downloaded" image, cropped / padded by hand."""
    if file_name == '00100.jpg':  # 41x48 image, 40x48 mask: a row more
        return np.vstack([mask, np.full((1, 48), 255, np.uint8)])
    if file_name == '00102.jpg':  # 37x44 image, 50x44 mask: 13 rows fewer
        return mask[:37]
    if file_name == '00105.jpg':  # 39x31 image, 38x30 mask
        out = np.full((39, 31), 255, np.uint8)
        out[:38, :30] = mask
        return out
    return mask


@pytest.mark.parametrize('split, n_images, n_samples, largest', [
    ('train', 2, 3, 13),
    ('test', 1, 3, 1),
])
def test_downloaded_sizes_aligned_and_reported_once(downloaded_fixture, split,
                                                    n_images, n_samples,
                                                    largest):
    root = downloaded_fixture['root']
    with warnings_logged() as records:
        ds = build(root, split)
        for _ in range(2):  # two epochs: nothing more is logged
            outs = [ds[i] for i in range(len(ds))]
    assert len(records) == 1, records
    total = len({ds.get_data_info(i)['img_path'] for i in range(len(ds))})
    assert (f"RRSISDDataset(split='{split}'): {n_images} of {total} images "
            f'({n_samples} of {len(ds)} samples) differ in size from their '
            f'mask by up to {largest} px per side') in records[0]
    assert 'size_tolerance=16' in records[0]
    expected = {
        name: sizes
        for name, sizes in downloaded_fixture['sizes'].items()
        if any(meta['file_name'] == name
               for key, meta in downloaded_fixture['samples'].items()
               if key[0] == split)
    }
    assert {k.rsplit('/', 1)[-1]: v
            for k, v in ds.misaligned_images.items()} == expected
    assert ds.missing_images == []
    for out in outs:
        meta = out['data_samples'].metainfo
        exp = downloaded_fixture['samples'][key_of(meta, split)]
        gt = out['data_samples'].gt_sem_seg.data[0].numpy()
        img_shape = downloaded_fixture['sizes'].get(exp['file_name'],
                                                    (exp['shape'], ))[0]
        assert gt.shape == img_shape == tuple(out['inputs'].shape[1:])
        np.testing.assert_array_equal(
            gt, aligned_by_hand(exp['mask'], exp['file_name']))


def test_downloaded_aligned_pixels(downloaded_fixture):
    """Hand-checkable pixels: the annotation keeps its top-left origin."""
    root = downloaded_fixture['root']
    ds = build(root, 'train')
    by_ref = {}
    for i in range(len(ds)):
        out = ds[i]
        by_ref[out['data_samples'].metainfo['ref_id']] = \
            out['data_samples'].gt_sem_seg.data[0].numpy()
    masks = {k[1]: v['mask'] for k, v in downloaded_fixture['samples'].items()}
    # ref 900: image one row taller; the new bottom row has no annotation
    assert by_ref[900].shape == (41, 48)
    assert (by_ref[900][40] == 255).all()
    assert set(np.unique(by_ref[900][:40])) <= {0, 1}
    assert (by_ref[900][:40] == masks[900]).all()
    # ref 902: image 13 rows shorter; the mask's rows 37-49 are dropped
    assert by_ref[902].shape == (37, 44)
    assert (by_ref[902] == masks[902][:37]).all()
    assert masks[902][37:].any()  # the fixture drops target pixels there
    # ref 901: image of the mask's size, untouched
    assert (by_ref[901] == masks[901]).all()


def test_downloaded_test_pipeline_scores_at_image_size(downloaded_fixture):
    """The test pipeline resizes the image; the ground truth stays at the
    image's size, its padded pixels ignored by ReferringIoUMetric."""
    ds = build(
        downloaded_fixture['root'], 'test', TEST_PIPELINE, test_mode=True)
    out = ds[0]
    gt = out['data_samples'].gt_sem_seg.data[0].numpy()
    assert tuple(out['inputs'].shape[1:]) == (64, 64)
    assert tuple(out['data_samples'].metainfo['ori_shape']) == (39, 31)
    assert gt.shape == (39, 31)
    assert (gt[38] == 255).all() and (gt[:, 30] == 255).all()
    assert set(np.unique(gt[:38, :30])) == {0, 1}


def test_downloaded_missing_image_refused(downloaded_fixture):
    with pytest.raises(FileNotFoundError) as err:
        build(downloaded_fixture['root'], 'val')
    msg = str(err.value)
    assert "RRSISDDataset(split='val'): 1 of 2 image files are missing " \
        '(1 of 2 samples)' in msg
    assert downloaded_fixture['missing'] in msg
    assert 'skip_missing_images=True' in msg


def test_downloaded_missing_image_skipped_on_request(downloaded_fixture):
    root = downloaded_fixture['root']
    with warnings_logged() as records:
        ds = build(root, 'val', skip_missing_images=True)
        [ds[i] for i in range(len(ds))]
    assert len(ds) == 1
    assert ds.get_data_info(0)['ref_id'] == 903  # the one whose image exists
    assert [p.rsplit('/', 1)[-1] for p in ds.missing_images] == \
        [downloaded_fixture['missing']]
    assert len(records) == 1, records
    assert "RRSISDDataset(split='val'): skipped 1 of 2 samples" in records[0]
    assert downloaded_fixture['missing'] in records[0]
    # the other splits lose nothing
    assert len(build(root, 'train', skip_missing_images=True)) == 4


def test_downloaded_jsonl_same_check(downloaded_fixture, tmp_path):
    jsonl = tmp_path / 'rrsisd_train.jsonl'
    write_rsrefseg_jsonl(downloaded_fixture, 'train', jsonl)
    a = build(downloaded_fixture['root'], 'train')
    b = build(downloaded_fixture['root'], 'train', ann_file=str(jsonl))
    assert b.misaligned_images == a.misaligned_images
    assert len(b.misaligned_images) == 2


def test_downloaded_too_far_off_is_an_error(downloaded_copy):
    root = downloaded_copy['root']
    recanvas_image(root / 'images/rrsisd/JPEGImages/00101.jpg', (36, 53))
    with pytest.raises(ValueError) as err:
        build(root, 'train')
    msg = str(err.value)
    assert 'ref_id=901' in msg and '00101.jpg is 36x53, its mask 36x36' in msg
    assert 'size_tolerance=16' in msg
    # a larger tolerance aligns it: 17 columns without annotation
    ds = build(root, 'train', size_tolerance=17)
    idx = next(
        i for i in range(len(ds)) if ds.get_data_info(i)['ref_id'] == 901)
    gt = ds[idx]['data_samples'].gt_sem_seg.data[0].numpy()
    mask = downloaded_copy['samples'][('train', 901, 2010)]['mask']
    assert gt.shape == (36, 53)
    assert (gt[:, :36] == mask).all() and (gt[:, 36:] == 255).all()


def test_size_tolerance_zero_requires_equal_sizes(downloaded_fixture):
    with pytest.raises(ValueError, match=r'ref_id=900.*41x48.*40x48'):
        build(downloaded_fixture['root'], 'train', size_tolerance=0)


def test_image_check_arguments(downloaded_fixture):
    root = downloaded_fixture['root']
    with pytest.raises(ValueError, match='size_tolerance must be'):
        build(root, 'train', size_tolerance=-1)
    with pytest.raises(ValueError, match='needs check_images=True'):
        build(root, 'val', check_images=False, skip_missing_images=True)
    # no check: the build reports nothing, the loader still aligns
    with warnings_logged() as records:
        ds = build(root, 'train', check_images=False)
    assert records == [] and ds.misaligned_images == {}
    shapes = {
        ds[i]['data_samples'].gt_sem_seg.data.shape[1:]
        for i in range(len(ds))
    }
    assert (41, 48) in shapes and (37, 44) in shapes


def test_base_config_on_downloaded_fixture(downloaded_fixture):
    """configs/_base_/datasets/rrsisd.py: masks aligned in both pipelines,
    a missing image refused until skip_missing_images is set (as
    ``--cfg-options val_dataloader.dataset.skip_missing_images=True``)."""
    cfg = Config.fromfile(str(REPO / 'configs/_base_/datasets/rrsisd.py'))
    root = str(downloaded_fixture['root'])
    init_default_scope('mmseg')
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=root))
    out = train[0]  # ref 900: 41x48 image, resized to 1024x1024
    assert tuple(out['inputs'].shape[1:]) == (1024, 1024)
    gt = out['data_samples'].gt_sem_seg.data[0].numpy()
    assert gt.shape == (1024, 1024) and (gt[-10:] == 255).all()
    test = DATASETS.build(dict(cfg.test_dataloader.dataset, data_root=root))
    assert test[0]['data_samples'].gt_sem_seg.data.shape[1:] == (39, 31)
    with pytest.raises(FileNotFoundError, match='skip_missing_images=True'):
        DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=root))
    cfg.merge_from_dict({'val_dataloader.dataset.skip_missing_images': True})
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=root))
    assert len(val) == 1
