"""Write synthetic referring scenes to disk in the RRSIS-D (REFER) layout.

The output is read by ``RRSISDDataset`` exactly like a real RRSIS-D
download, so the file-based loading path (pickle + instances.json +
compressed RLE + JPEG images) can be exercised without the real data::

    python tools/dataset_converters/synthetic_to_rrsisd.py \
        data/synthetic_rrsisd --num-train 200 --num-val 50 --num-test 50

    data/synthetic_rrsisd/
    ├── refs(unc).p       # one ref (one sentence) per scene
    ├── instances.json    # images, categories (the 4 shapes, ids 0-3),
    │                     # annotations with `categories_id`, RLE masks
    └── images/rrsisd/JPEGImages/00000.jpg ...

Images are JPEG like RRSIS-D's, so pixel values differ slightly from the
in-memory scenes; masks are stored losslessly (compressed RLE, str counts).
Image, annotation and ref ids are unique across splits (train first).
"""
import argparse
import json
import os
import os.path as osp
import pickle
import sys
from typing import Dict

import cv2
import numpy as np

try:
    from rsrefseg_mm.datasets import SyntheticReferringDataset, encode_mask
    from rsrefseg_mm.datasets.synthetic_scenes import EXPRESSION_TYPES, SHAPES
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
    from rsrefseg_mm.datasets import SyntheticReferringDataset, encode_mask
    from rsrefseg_mm.datasets.synthetic_scenes import EXPRESSION_TYPES, SHAPES


def write_rrsisd(out_dir: str,
                 datasets: Dict[str, SyntheticReferringDataset],
                 jpeg_quality: int = 95) -> Dict[str, int]:
    """Write ``{split: dataset}`` to ``out_dir`` in the REFER layout.

    Args:
        out_dir (str): Output root (the ``data_root`` of RRSISDDataset).
        datasets (dict[str, SyntheticReferringDataset]): Datasets per split
            (``'train'``, ``'val'``, ``'test'``).
        jpeg_quality (int): JPEG quality of the images. Defaults to 95.

    Returns:
        dict[str, int]: Number of refs written per split.
    """
    img_dir = osp.join(out_dir, 'images', 'rrsisd', 'JPEGImages')
    os.makedirs(img_dir, exist_ok=True)
    categories = [dict(id=i, name=name) for i, name in enumerate(SHAPES)]
    cat_ids = {name: i for i, name in enumerate(SHAPES)}
    images, annotations, refs = [], [], []
    counts = {}
    next_id = 0
    for split in ('train', 'val', 'test'):
        if split not in datasets:
            continue
        ds = datasets[split]
        for idx in range(len(ds)):
            info = ds.get_data_info(idx)
            uid = next_id
            next_id += 1
            file_name = f'{uid:05d}.jpg'
            img = info['img']
            h, w = img.shape[:2]
            params = [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]
            if not cv2.imwrite(osp.join(img_dir, file_name), img, params):
                raise OSError(f'could not write {file_name} in {img_dir}')
            mask = (info['gt_seg_map'] == 1).astype(np.uint8)
            ys, xs = np.nonzero(mask)
            bbox = [
                int(xs.min()),
                int(ys.min()),
                int(xs.max()),
                int(ys.max())
            ] if len(xs) else [0, 0, 0, 0]
            cat = cat_ids[info['category']]
            images.append(dict(id=uid, file_name=file_name, height=h, width=w))
            annotations.append(
                dict(
                    id=uid,
                    image_id=uid,
                    categories_id=cat,
                    bbox=bbox,
                    area=int(mask.sum()),
                    segmentation=[encode_mask(mask, as_str=True)]))
            text = info['text']
            refs.append(
                dict(
                    ref_id=uid,
                    ann_id=uid,
                    image_id=uid,
                    split=split,
                    file_name=file_name,
                    category_id=cat,
                    sent_ids=[uid],
                    sentences=[
                        dict(
                            tokens=text.split(),
                            raw=text,
                            sent_id=uid,
                            sent=text)
                    ]))
        counts[split] = len(ds)
    with open(osp.join(out_dir, 'refs(unc).p'), 'wb') as f:
        pickle.dump(refs, f)
    with open(osp.join(out_dir, 'instances.json'), 'w') as f:
        json.dump(
            dict(
                images=images, annotations=annotations, categories=categories),
            f)
    return counts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write synthetic referring scenes in the RRSIS-D layout')
    parser.add_argument(
        'out_dir', help='output root (RRSISDDataset data_root)')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--num-test', type=int, default=50)
    parser.add_argument('--img-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--num-objects',
        type=int,
        nargs=2,
        default=(3, 5),
        metavar=('MIN', 'MAX'))
    parser.add_argument(
        '--expression-types',
        nargs='+',
        choices=EXPRESSION_TYPES,
        default=list(EXPRESSION_TYPES),
        help='kinds of expressions (default: all); the tiny demo model is '
        'trained on attribute ones only')
    parser.add_argument('--jpeg-quality', type=int, default=95)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    datasets = {}
    for split, n in (('train', args.num_train), ('val', args.num_val),
                     ('test', args.num_test)):
        if n > 0:
            datasets[split] = SyntheticReferringDataset(
                split=split,
                num_samples=n,
                img_size=args.img_size,
                seed=args.seed,
                num_objects=tuple(args.num_objects),
                expression_types=tuple(args.expression_types))
    counts = write_rrsisd(args.out_dir, datasets, args.jpeg_quality)
    print(f'wrote {counts} refs to {args.out_dir} (RRSIS-D layout)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
