"""A tiny RRSIS-D-style (REFER layout) dataset written by the tests.

Masks are drawn with numpy and encoded with pycocotools in every form the
loader accepts: compressed RLE with str counts (inside a list, as RRSIS-D
does), compressed RLE with bytes counts, uncompressed RLE and polygons.

A second fixture has the same annotations with the images as RRSIS-D is
downloaded: some a pixel or 13 off their masks, one missing.
"""
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from helpers import recanvas_image

CATEGORIES = [{
    'id': 0,
    'name': 'airplane'
}, {
    'id': 1,
    'name': 'ship'
}, {
    'id': 2,
    'name': 'storagetank'
}]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths, starting with a background run."""
    flat = mask.flatten(order='F').astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {'size': list(mask.shape), 'counts': counts}


def _compressed(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


def build_refer_fixture(root: Path) -> dict:
    """Write images, refs(unc).p and instances.json under ``root``.

    Returns:
        dict: ``samples``: {(split, ref_id, sent_id): dict(text, mask,
        ann_id, image_id, category, file_name)}, ``counts`` per split.
    """
    rng = np.random.default_rng(0)
    img_dir = root / 'images' / 'rrsisd' / 'JPEGImages'
    img_dir.mkdir(parents=True)
    sizes = [(40, 48), (36, 36), (50, 44), (32, 40), (44, 52), (38, 30)]
    images, anns, refs, samples = [], [], [], {}
    forms = [
        'str_list', 'bytes', 'uncompressed', 'polygon', 'str_list', 'bytes'
    ]
    plan = [  # (split, number of sentences)
        ('train', 2), ('train', 1), ('train', 1), ('val', 1), ('val', 1),
        ('test', 3)
    ]
    for k, ((h, w), form, (split,
                           n_sent)) in enumerate(zip(sizes, forms, plan)):
        image_id = 100 + k
        ann_id = 500 + k
        ref_id = 900 + k
        file_name = f'{image_id:05d}.jpg'
        img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(img_dir / file_name), img)
        images.append(
            dict(id=image_id, file_name=file_name, height=h, width=w))
        if form == 'polygon':
            poly = [[3.0, 4.0, w - 5.0, 6.0, w / 2.0, h - 4.0]]
            rle = coco_mask.frPyObjects(poly, h, w)
            mask = coco_mask.decode(coco_mask.merge(rle))
            seg = poly
        else:
            mask = np.zeros((h, w), np.uint8)
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            mask[y0:y0 + h // 3, x0:x0 + w // 3] = 1
            yy, xx = np.ogrid[:h, :w]
            mask[(yy - h * 0.7)**2 + (xx - w * 0.6)**2 < (h / 6)**2] = 1
            if form == 'str_list':
                rle = _compressed(mask)
                seg = [{
                    'size': rle['size'],
                    'counts': rle['counts'].decode('ascii')
                }]
            elif form == 'bytes':
                seg = _compressed(mask)  # dict, bytes counts
            else:
                seg = _uncompressed_rle(mask)
        cat = CATEGORIES[k % 3]
        anns.append(
            dict(
                id=ann_id,
                image_id=image_id,
                categories_id=cat['id'],
                bbox=[0, 0, 1, 1],
                area=int(mask.sum()),
                segmentation=seg))
        sentences = []
        for s in range(n_sent):
            sent_id = 2000 + 10 * k + s
            text = f'the {cat["name"]} number {k} phrase {s}'
            sentences.append(
                dict(
                    sent=text, raw=text, tokens=text.split(), sent_id=sent_id))
            samples[(split, ref_id, sent_id)] = dict(
                text=text,
                mask=mask.astype(np.uint8),
                ann_id=ann_id,
                image_id=image_id,
                category=cat['name'],
                file_name=file_name,
                shape=(h, w))
        refs.append(
            dict(
                ref_id=ref_id,
                ann_id=ann_id,
                image_id=image_id,
                split=split,
                file_name=file_name,
                category_id=cat['id'],
                sent_ids=[s['sent_id'] for s in sentences],
                sentences=sentences))
    with open(root / 'refs(unc).p', 'wb') as f:
        pickle.dump(refs, f)
    # bytes counts are not JSON: RRSIS-D stores str; keep the bytes form
    # only in a pickled copy, write JSON with str counts
    json_anns = []
    for a in anns:
        a = dict(a)
        seg = a['segmentation']
        if isinstance(seg, dict) and isinstance(seg['counts'], bytes):
            a['segmentation'] = {
                'size': list(seg['size']),
                'counts': seg['counts'].decode('ascii')
            }
        json_anns.append(a)
    with open(root / 'instances.json', 'w') as f:
        json.dump(
            dict(images=images, annotations=json_anns, categories=CATEGORIES),
            f)
    counts = {
        s: sum(1 for k in samples if k[0] == s)
        for s in ('train', 'val', 'test')
    }
    return dict(
        root=root,
        samples=samples,
        counts=counts,
        refs=refs,
        anns=anns,
        images=images)


@pytest.fixture(scope='session')
def refer_fixture(tmp_path_factory) -> dict:
    return build_refer_fixture(tmp_path_factory.mktemp('rrsisd'))


@pytest.fixture
def refer_copy(tmp_path) -> dict:
    """A fresh, writable fixture for tests that corrupt files."""
    return build_refer_fixture(tmp_path / 'rrsisd')


#: Images of the "as downloaded" fixture whose size differs from their
#: mask: file -> (image size, mask size), (h, w).
DOWNLOADED_SIZES = {
    '00100.jpg': ((41, 48), (40, 48)),  # train ref 900: one row more
    '00102.jpg': ((37, 44), (50, 44)),  # train ref 902: 13 rows fewer
    '00105.jpg': ((39, 31), (38, 30)),  # test ref 905: a row, a column more
}
#: Missing from the "as downloaded" fixture (val ref 904).
DOWNLOADED_MISSING = '00104.jpg'


def build_downloaded_fixture(root: Path) -> dict:
    """:func:`build_refer_fixture`, then images as RRSIS-D is downloaded:
    those of :data:`DOWNLOADED_SIZES` rewritten at their image size, and
    :data:`DOWNLOADED_MISSING` deleted.

    Returns:
        dict: :func:`build_refer_fixture`'s, plus ``sizes``
        (:data:`DOWNLOADED_SIZES`) and ``missing`` (the file name).
    """
    fixture = build_refer_fixture(root)
    img_dir = root / 'images' / 'rrsisd' / 'JPEGImages'
    for name, (shape, _) in DOWNLOADED_SIZES.items():
        recanvas_image(img_dir / name, shape)
    (img_dir / DOWNLOADED_MISSING).unlink()
    return dict(fixture, sizes=DOWNLOADED_SIZES, missing=DOWNLOADED_MISSING)


@pytest.fixture(scope='session')
def downloaded_fixture(tmp_path_factory) -> dict:
    return build_downloaded_fixture(tmp_path_factory.mktemp('downloaded'))


@pytest.fixture
def downloaded_copy(tmp_path) -> dict:
    """A fresh, writable "as downloaded" fixture."""
    return build_downloaded_fixture(tmp_path / 'rrsisd')


def _rect_mask(h: int, w: int, y0: int, x0: int, y1: int,
               x1: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _str_rle(mask: np.ndarray) -> dict:
    rle = _compressed(mask)
    return {'size': list(rle['size']), 'counts': rle['counts'].decode()}


def build_gres_fixture(root: Path) -> dict:
    """A REFER-layout dataset with generalized referring.

    Refs of one object, of several (``ann_id`` a list: the mask is the
    union, the objects' masks in RLE, uncompressed RLE and polygon forms)
    and of none (``ann_id`` ``[]``, ``-1``, ``[-1]``, None; one with
    ``no_target: True``).

    Returns:
        dict: ``root``; ``masks``: {ref_id: expected (h, w) mask};
        ``no_target``: ref ids of no target; ``splits``: {split: ref ids};
        ``ann_ids``: {ref_id: expected ``ann_id`` metainfo}.
    """
    img_dir = root / 'images' / 'rrsisd' / 'JPEGImages'
    img_dir.mkdir(parents=True)
    shapes = {
        300: (40, 48),
        301: (36, 36),
        302: (32, 40),
        303: (30, 30),
        304: (28, 28)
    }
    rng = np.random.default_rng(1)
    for image_id, (h, w) in shapes.items():
        cv2.imwrite(
            str(img_dir / f'{image_id}.jpg'),
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    poly = [[30.0, 4.0, 44.0, 4.0, 44.0, 20.0, 30.0, 20.0]]
    masks = {
        700: _rect_mask(40, 48, 2, 2, 12, 14),
        701:
        coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, 40, 48))),
        702: _rect_mask(40, 48, 25, 5, 35, 20),
        703: _rect_mask(36, 36, 10, 10, 20, 30),
        704: _rect_mask(32, 40, 0, 0, 8, 8),
        705: _rect_mask(30, 30, 5, 5, 25, 25),
        706: _rect_mask(28, 28, 3, 4, 9, 20),
    }
    segs = {
        700: [_str_rle(masks[700])],
        701: poly,
        702: _uncompressed_rle(masks[702]),
        703: _str_rle(masks[703]),
        704: [_str_rle(masks[704])],
        705: [_str_rle(masks[705])],
        706: [_str_rle(masks[706])],
    }
    ann_image = {
        700: 300,
        701: 300,
        702: 300,
        703: 301,
        704: 302,
        705: 303,
        706: 304
    }
    ann_cat = {700: 0, 701: 1, 702: 0, 703: 2, 704: 1, 705: 0, 706: 1}
    # ref_id: (split, image, ann_id, category_id, extra keys)
    plan = {
        960: ('train', 300, 700, 0, {}),
        961: ('train', 300, [700, 702], 0, {}),
        962: ('train', 300, [701, 700], None, {}),
        963: ('train', 301, [], 1, {
            'no_target': True
        }),
        964: ('train', 302, -1, 2, {}),
        965: ('train', 301, 703, 2, {}),
        966: ('train', 302, None, 0, {}),
        967: ('val', 303, [-1], 1, {
            'no_target': True
        }),
        968: ('val', 303, 705, 0, {}),
        969: ('test', 304, 706, 1, {}),
        970: ('test', 304, [706], 1, {
            'no_target': False
        }),
    }
    refs, expected, ann_ids, no_target = [], {}, {}, set()
    splits = {'train': [], 'val': [], 'test': []}
    for ref_id, (split, image_id, ann_id, cat, extra) in plan.items():
        ids = ann_id if isinstance(ann_id, list) else [ann_id]
        ids = [i for i in ids if i not in (None, -1)]
        mask = np.zeros(shapes[image_id], np.uint8)
        for i in ids:
            mask |= masks[i]
        expected[ref_id] = mask
        ann_ids[ref_id] = ids[0] if len(ids) == 1 else (ids or None)
        if not ids:
            no_target.add(ref_id)
        splits[split].append(ref_id)
        ref = dict(
            ref_id=ref_id,
            ann_id=ann_id,
            image_id=image_id,
            split=split,
            file_name=f'{image_id}.jpg',
            sentences=[
                dict(sent=f'expression {ref_id} {s}', sent_id=10 * ref_id + s)
                for s in range(1 + ref_id % 2)
            ],
            **extra)
        if cat is not None:
            ref['category_id'] = cat
        refs.append(ref)
    with open(root / 'refs(unc).p', 'wb') as f:
        pickle.dump(refs, f)
    with open(root / 'instances.json', 'w') as f:
        json.dump(
            dict(
                images=[
                    dict(id=i, file_name=f'{i}.jpg', height=h, width=w)
                    for i, (h, w) in shapes.items()
                ],
                annotations=[
                    dict(
                        id=a,
                        image_id=ann_image[a],
                        categories_id=ann_cat[a],
                        bbox=[0, 0, 1, 1],
                        area=int(masks[a].sum()),
                        segmentation=segs[a]) for a in masks
                ],
                categories=CATEGORIES), f)
    return dict(
        root=root,
        masks=expected,
        ann_ids=ann_ids,
        no_target=no_target,
        splits=splits,
        shapes=shapes)


@pytest.fixture(scope='session')
def gres_fixture(tmp_path_factory) -> dict:
    return build_gres_fixture(tmp_path_factory.mktemp('gres'))
