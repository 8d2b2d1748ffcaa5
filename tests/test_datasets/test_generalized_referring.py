"""Generalized referring in REFER data: refs of several objects or of
none (RRSIS-D layout and jsonl), and no-target pairs drawn from other
images (``no_target_ratio``)."""
import json
import pickle
from collections import defaultdict

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets import LoadReferringAnnotations
from rsrefseg_mm.datasets.annotation_io import AnnotationError
from rsrefseg_mm.datasets.mask_utils import (MaskDecodeError,
                                             decode_segmentation,
                                             split_objects)
from helpers import REPO, load_script

PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]


def build(root, split='train', pipeline=PIPELINE, **kwargs):
    init_default_scope('mmseg')
    return DATASETS.build(
        dict(
            type='RRSISDDataset',
            data_root=str(root),
            split=split,
            pipeline=pipeline,
            **kwargs))


def check_masks(ds, fixture, split):
    seen = set()
    for i in range(len(ds)):
        out = ds[i]
        meta = out['data_samples'].metainfo
        ref_id = meta['ref_id']
        seen.add(ref_id)
        gt = out['data_samples'].gt_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(gt, fixture['masks'][ref_id])
        assert meta['ann_id'] == fixture['ann_ids'][ref_id], ref_id
        info = ds.get_data_info(i)
        assert info['no_target'] == (ref_id in fixture['no_target'])
    assert seen == set(fixture['splits'][split])


# ------------------------------------------------- several objects / none
@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_refer_several_objects_and_none(gres_fixture, split):
    ds = build(gres_fixture['root'], split)
    check_masks(ds, gres_fixture, split)
    if split == 'train':
        no_target = [
            ds.get_data_info(i) for i in range(len(ds))
            if ds.get_data_info(i)['no_target']
        ]
        # [], -1 and None: 963 (2 sentences), 964, 966
        assert sorted(i['ref_id'] for i in no_target) == [963, 963, 964, 966]
        assert all(i['segmentation'] is None for i in no_target)


def test_no_target_mask_needs_nothing_decoded():
    t = LoadReferringAnnotations()
    res = t(
        dict(
            no_target=True,
            segmentation={'counts': 'not an RLE'},  # never looked at
            ori_shape=(5, 7),
            seg_fields=[]))
    assert res['gt_seg_map'].shape == (5, 7)
    assert res['gt_seg_map'].dtype == np.uint8 and not res['gt_seg_map'].any()
    res = t(dict(no_target=True, seg_size=(3, 4), seg_fields=[]))
    assert res['gt_seg_map'].shape == (3, 4)
    with pytest.raises(KeyError, match='no-target sample.*ref_id=4'):
        t(dict(no_target=True, seg_fields=[], ref_id=4))


def test_several_objects_union_in_every_form():
    a = np.zeros((6, 8), np.uint8)
    a[1:3, 1:4] = 1
    b = np.zeros((6, 8), np.uint8)
    b[4:6, 5:8] = 1
    from rsrefseg_mm.datasets import encode_mask
    poly = [[5.0, 0.0, 7.0, 0.0, 7.0, 2.0, 5.0, 2.0]]
    objects = [encode_mask(a), [encode_mask(b, as_str=False)], poly]
    assert len(split_objects(objects)) == 3
    mask = decode_segmentation(objects, 6, 8)
    expected = a | b | decode_segmentation(poly, 6, 8)
    np.testing.assert_array_equal(mask, expected)
    # one object's parts (a list of RLEs) is one object
    assert len(split_objects([encode_mask(a), encode_mask(b)])) == 1
    with pytest.raises(MaskDecodeError, match='segmentation must be'):
        split_objects([encode_mask(a), 'x'])


def _rewrite_refs(root, fn):
    path = root / 'refs(unc).p'
    refs = pickle.load(open(path, 'rb'))
    fn({r['ref_id']: r for r in refs})
    pickle.dump(refs, open(path, 'wb'))


@pytest.mark.parametrize('change, message', [
    (dict(ann_id=700, no_target=True),
     r'ref_id=960: "no_target" is True but the entry names a target'),
    (dict(ann_id=[-1, 700]), r'ref_id=960: "ann_id" \[-1, 700\] mixes -1'),
    (dict(ann_id=[700, [702]]), 'ref_id=960: expected annotation ids'),
    (dict(no_target='yes'), 'expected "no_target", true or false'),
])
def test_refer_contradictions_are_named(gres_fixture, tmp_path, change,
                                        message):
    import shutil
    root = tmp_path / 'gres'
    shutil.copytree(gres_fixture['root'], root)
    _rewrite_refs(root, lambda refs: refs[960].update(change))
    with pytest.raises(AnnotationError, match=message):
        build(root)


def test_refer_without_ann_id_is_an_error(gres_fixture, tmp_path):
    import shutil
    root = tmp_path / 'gres'
    shutil.copytree(gres_fixture['root'], root)
    _rewrite_refs(root, lambda refs: refs[965].pop('ann_id'))
    with pytest.raises(AnnotationError, match='ref_id=965: no "ann_id"'):
        build(root)


def test_checker_counts_and_jsonl_round_trip(gres_fixture, tmp_path, capsys):
    tool = load_script('tools/dataset_converters/rrsisd.py')
    rc = tool.main([
        str(gres_fixture['root']), '--skip-count-check', '--out-jsonl',
        str(tmp_path)
    ])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert ('generalized referring expressions: train: 4 no-target / 3 '
            'multi-target, val: 2 no-target / 0 multi-target') in out
    lines = [
        json.loads(x)
        for x in open(tmp_path / 'rrsisd_train.jsonl').read().splitlines()
    ]
    by_ref = {x['ref_id']: x for x in lines}
    assert by_ref[961]['ann_id'] == [700, 702]
    assert len(by_ref[961]['segmentation']) == 2
    assert by_ref[963]['no_target'] is True
    assert by_ref[963]['segmentation'] == [] and by_ref[963]['ann_id'] is None
    assert 'no_target' not in by_ref[960]
    for split in ('train', 'val', 'test'):
        ds = build(
            gres_fixture['root'],
            split,
            ann_file=str(tmp_path / f'rrsisd_{split}.jsonl'))
        check_masks(ds, gres_fixture, split)


def _jsonl(tmp_path, **item):
    line = dict(
        split='train',
        sent='the ship',
        file_name='301.jpg',
        category_id=1,
        image_id=301)
    line.update(item)
    path = tmp_path / 'g.jsonl'
    path.write_text(json.dumps(line) + '\n')
    return str(path)


def test_jsonl_empty_segmentation_needs_no_target(gres_fixture, tmp_path):
    root = gres_fixture['root']
    for seg in ([], None):
        with pytest.raises(MaskDecodeError, match='"no_target": true'):
            build(root, ann_file=_jsonl(tmp_path, segmentation=seg))
    ds = build(root, ann_file=_jsonl(tmp_path, no_target=True))
    assert ds.get_data_info(0)['no_target']
    assert not ds[0]['data_samples'].gt_sem_seg.data.any()
    with pytest.raises(AnnotationError, match='names a target'):
        build(
            root,
            ann_file=_jsonl(
                tmp_path,
                no_target=True,
                segmentation=[[1, 1, 5, 1, 5, 5]],
                height=36,
                width=36))


# ---------------------------------------------------- no-target pairs
def image_categories(root):
    """Categories on each image file, read independently of the dataset:
    every annotation on it and every ref's targets."""
    inst = json.load(open(root / 'instances.json'))
    names = {im['id']: im['file_name'] for im in inst['images']}
    anns = {a['id']: a for a in inst['annotations']}
    cats = defaultdict(set)
    for a in inst['annotations']:
        cats[names[a['image_id']]].add(a['categories_id'])
    for ref in pickle.load(open(root / 'refs(unc).p', 'rb')):
        ids = ref['ann_id'] if isinstance(ref['ann_id'],
                                          list) else [ref['ann_id']]
        for i in ids:
            if i in anns:
                cats[ref['file_name']].add(anns[i]['categories_id'])
    return cats


def pairs_of(ds):
    return [
        ds.get_data_info(i) for i in range(len(ds))
        if ds.get_data_info(i).get('text_source') is not None
    ]


@pytest.mark.parametrize('ratio', [0.2, 0.5, 0.75])
def test_no_target_pairs_ratio_and_categories(refer_fixture, ratio):
    root = refer_fixture['root']
    n = refer_fixture['counts']['train']
    ds = build(root, no_target_ratio=ratio)
    pairs = pairs_of(ds)
    assert len(pairs) == round(n * ratio / (1 - ratio))
    assert ds.num_no_target_pairs == len(pairs)
    assert len(ds) == n + len(pairs)
    assert abs(len(pairs) / len(ds) - ratio) <= 0.5 / len(ds) + 1e-9
    cats = image_categories(root)
    for info in pairs:
        name = info['img_path'].rsplit('/', 1)[-1]
        assert info['no_target'] and info['segmentation'] is None
        assert info['category_id'] not in cats[name], info['mask_source']
        donor = ds.get_data_info(info['text_source'])
        assert donor['text'] == info['text']
        assert donor['category_id'] == info['category_id']
        assert donor['img_path'] != info['img_path']


def test_no_target_pairs_masks_are_empty_at_image_size(refer_fixture):
    ds = build(refer_fixture['root'], no_target_ratio=0.5)
    n = refer_fixture['counts']['train']
    for i in range(n, len(ds)):
        out = ds[i]
        gt = out['data_samples'].gt_sem_seg.data
        assert not gt.any()
        assert tuple(gt.shape[1:]) == out['data_samples'].ori_shape


def test_no_target_pairs_deterministic(refer_fixture):
    root = refer_fixture['root']

    def drawn(seed):
        ds = build(root, no_target_ratio=0.75, no_target_seed=seed)
        return [(p['img_path'], p['text']) for p in pairs_of(ds)]

    assert drawn(0) == drawn(0)
    assert drawn(0) != drawn(1)
    assert build(root).num_no_target_pairs == 0


def test_no_target_pairs_respect_unreferred_objects(refer_copy):
    """An object of instances.json that no ref names is still on its image:
    no pair puts an expression of its category there."""
    root = refer_copy['root']
    inst = json.load(open(root / 'instances.json'))
    # image 100 holds an airplane (ref 900); add a ship and a storagetank
    for k, cat in enumerate((1, 2)):
        inst['annotations'].append(
            dict(
                id=800 + k,
                image_id=100,
                categories_id=cat,
                segmentation=[[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]))
    json.dump(inst, open(root / 'instances.json', 'w'))
    ds = build(root, no_target_ratio=0.75)
    hosts = {p['img_path'].rsplit('/', 1)[-1] for p in pairs_of(ds)}
    assert '00100.jpg' not in hosts and hosts


def test_no_target_pairs_need_an_image_without_some_category(refer_copy):
    root = refer_copy['root']
    _rewrite_refs(
        root, lambda refs: [r.update(category_id=0) for r in refs.values()])
    inst = json.load(open(root / 'instances.json'))
    for a in inst['annotations']:
        a['categories_id'] = 0
    json.dump(inst, open(root / 'instances.json', 'w'))
    with pytest.raises(
            ValueError,
            match='no_target_ratio=0.2 needs an '
            'image without some category'):
        build(root, no_target_ratio=0.2)


@pytest.mark.parametrize('kwargs', [
    dict(no_target_ratio=1.0),
    dict(no_target_ratio=-0.1),
    dict(no_target_ratio=True),
    dict(no_target_seed=-1),
    dict(max_mask_pixels=0),
    dict(max_annotation_bytes=0),
])
def test_arguments_are_checked(refer_fixture, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build(refer_fixture['root'], **kwargs)


def test_no_target_pairs_from_jsonl(refer_fixture, tmp_path):
    tool = load_script('tools/dataset_converters/rrsisd.py')
    assert tool.main([
        str(refer_fixture['root']), '--skip-count-check', '--out-jsonl',
        str(tmp_path)
    ]) == 0
    ds = build(
        refer_fixture['root'],
        ann_file=str(tmp_path / 'rrsisd_train.jsonl'),
        no_target_ratio=0.5)
    pairs = pairs_of(ds)
    assert len(pairs) == refer_fixture['counts']['train']
    cats = image_categories(refer_fixture['root'])
    for info in pairs:
        assert info['category_id'] not in cats[info['img_path'].rsplit('/',
                                                                       1)[-1]]


# --------------------------------------------------------------- config
GRES = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b-gres_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-'
    '1024x1024.py')
BASE = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py')


def test_gres_config_adds_no_target_pairs_and_scores_them():
    gres, base = Config.fromfile(str(GRES)), Config.fromfile(str(BASE))
    for split in ('val', 'test'):
        assert gres[f'{split}_dataloader'].dataset.no_target_ratio == 0.0
        assert gres[f'{split}_evaluator'] == dict(
            type='ReferringIoUMetric', generalized=True)
        assert base[f'{split}_evaluator'] == dict(type='ReferringIoUMetric')
    gres_dict, base_dict = gres.to_dict(), base.to_dict()
    gres_train = gres_dict.pop('train_dataloader')['dataset']
    base_train = base_dict.pop('train_dataloader')['dataset']
    assert gres_train.pop('no_target_ratio') == 0.2
    assert base_train.pop('no_target_ratio') == 0.0  # the paper's: off
    assert gres_train.pop('no_target_seed') == base_train.pop(
        'no_target_seed') == 0
    assert gres_train == base_train
    for key in ('val_evaluator', 'test_evaluator'):
        gres_dict.pop(key), base_dict.pop(key)
    assert gres_dict == base_dict  # the model and the recipe are the base's
