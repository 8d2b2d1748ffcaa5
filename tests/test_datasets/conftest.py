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
