"""Check an RRSIS-D download and optionally write RSRefSeg-style jsonl.

Every file the refs point at must exist and decode; the script prints exactly
what is missing or broken and exits non-zero on any problem::

    python tools/dataset_converters/rrsisd.py data/rrsisd
    python tools/dataset_converters/rrsisd.py data/rrsisd \
        --out-jsonl data/rrsisd

Images as downloaded:

- missing image files are listed, with the images and expressions they
  take out of each split; they fail the check unless
  ``--allow-missing-images`` (``RRSISDDataset`` then needs
  ``skip_missing_images=True``, which leaves their samples out);
- images whose size differs from their mask by at most ``--size-tolerance``
  pixels per side (default 16, ``RRSISDDataset``'s ``size_tolerance``) are
  listed with their counts per split and pass (the dataset aligns their
  masks); a larger difference fails the check.

Expected layout (RMSIN release, https://github.com/Lsan2401/RMSIN)::

    data/rrsisd/
    ├── refs(unc).p
    ├── instances.json
    └── images/rrsisd/JPEGImages/*.jpg

Expected expression counts: train 12,181, val 1,740, test 3,481
(``--skip-count-check`` for subsets or other REFER-style data). A progress
bar (rate, ETA) is drawn on stderr when it is a terminal.

``--out-jsonl DIR`` writes ``rrsisd_{train,val,test}.jsonl`` in RSRefSeg's
converted format (``split, image_id, sent, file_name, category_id,
category_name, ann_id, bbox, segmentation, area``) plus ``ref_id`` and
``sent_id``, one line per (ref, sentence), those of missing images included
(the dataset decides, as for the pickle); ``RRSISDDataset`` reads them with
``ann_file='rrsisd_<split>.jsonl'``.
"""
import argparse
import json
import os
import os.path as osp
import sys
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Set, Tuple

import cv2

try:
    from rsrefseg_mm.datasets import decode_segmentation
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
    from rsrefseg_mm.datasets import decode_segmentation

from rsrefseg_core.text import check_expression  # noqa: E402
from rsrefseg_mm.datasets.mask_utils import (  # noqa: E402
    DEFAULT_SIZE_TOLERANCE, segmentation_size)
from rsrefseg_mm.datasets.rrsisd import read_image_size  # noqa: E402
from rsrefseg_mm.utils import load_plain_pickle_file  # noqa: E402
from rsrefseg_mm.utils import UnsafePickleError, track  # noqa: E402

EXPECTED = {'train': 12181, 'val': 1740, 'test': 3481}
DOWNLOAD_HINT = (
    'RRSIS-D comes from the RMSIN release (https://github.com/Lsan2401/RMSIN,'
    ' links in its README). Put refs(unc).p and instances.json in the data '
    'root and the images in <data_root>/images/rrsisd/JPEGImages/.')


class Report:
    """Collects problems by kind; prints the first few of each.

    Args:
        show (int): Entries listed per kind.
        accepted (Iterable[str]): Kinds that are listed but do not fail the
            check.
    """

    def __init__(self, show: int = 20, accepted: Iterable[str] = ()) -> None:
        self.problems: Dict[str, List[str]] = defaultdict(list)
        self.show = show
        self.accepted = set(accepted)

    def add(self, kind: str, msg: str) -> None:
        self.problems[kind].append(msg)

    def print(self) -> None:
        for kind, msgs in self.problems.items():
            what = 'accepted' if kind in self.accepted else 'problem(s)'
            print(f'\n[{kind}] {len(msgs)} {what}:')
            for m in msgs[:self.show]:
                print(f'  {m}')
            if len(msgs) > self.show:
                print(f'  ... and {len(msgs) - self.show} more')

    def __bool__(self) -> bool:
        return any(kind not in self.accepted for kind in self.problems)


class PerSplit:
    """Images and expressions per split (missing / misaligned images)."""

    def __init__(self) -> None:
        self.images: Dict[str, Set[str]] = defaultdict(set)
        self.expressions: Counter = Counter()

    def add(self, split: str, file_name: str, n_expressions: int) -> None:
        self.images[split].add(file_name)
        self.expressions[split] += n_expressions

    def __bool__(self) -> bool:
        return bool(self.images)

    def summary(self) -> str:
        """E.g. ``'2 (train: 1 image(s) / 2 expression(s), test: ...)'``."""
        total = len(set().union(*self.images.values()))
        parts = [
            f'{split}: {len(self.images[split])} image(s) / '
            f'{self.expressions[split]} expression(s)' for split in EXPECTED
            if split in self.images
        ]
        return f'{total} ({", ".join(parts)})'


def _hw(shape: Tuple[int, int]) -> str:
    return f'{shape[0]}x{shape[1]}'


def check(args: argparse.Namespace) -> int:
    root = args.data_root
    ann_path = osp.join(root, args.ann_file)
    inst_path = osp.join(root, args.instances)
    img_dir = osp.join(root, args.img_dir)
    tol = args.size_tolerance
    report = Report(
        args.show,
        accepted=['aligned size'] +
        (['missing image'] if args.allow_missing_images else []))

    missing = [p for p in (ann_path, inst_path) if not osp.isfile(p)]
    if not osp.isdir(img_dir):
        missing.append(img_dir + '/')
    if missing:
        print('RRSIS-D check FAILED: missing ' + ', '.join(missing))
        print(DOWNLOAD_HINT)
        return 1
    try:
        refs = load_plain_pickle_file(ann_path)
        assert isinstance(refs, list), f'expected a list, got {type(refs)}'
    except UnsafePickleError as e:
        print(f'RRSIS-D check FAILED: {e}')
        return 1
    except Exception as e:
        print(f'RRSIS-D check FAILED: cannot read {ann_path}: {e!r}')
        print(DOWNLOAD_HINT)
        return 1
    try:
        with open(inst_path) as f:
            inst = json.load(f)
        anns = {a['id']: a for a in inst['annotations']}
    except Exception as e:
        print(f'RRSIS-D check FAILED: cannot read {inst_path}: {e!r}')
        print(DOWNLOAD_HINT)
        return 1
    images = {im['id']: im for im in inst.get('images', [])}
    cat_names = {c['id']: c['name'] for c in inst.get('categories', [])}

    counts: Counter = Counter()
    lines: Dict[str, List[dict]] = defaultdict(list)
    # file name -> image (h, w); None: missing, corrupt or header unreadable
    checked_images: Dict[str, Optional[Tuple[int, int]]] = {}
    missing, aligned = PerSplit(), PerSplit()
    largest = 0
    for ref in track(refs, 'checking RRSIS-D refs', unit='ref'):
        ref_id = ref.get('ref_id')
        split = ref.get('split')
        where = f'ref_id={ref_id}'
        if split not in EXPECTED:
            report.add('bad split', f'{where}: split={split!r}')
            continue
        file_name = ref.get('file_name')
        img_path = osp.join(img_dir, str(file_name))
        n_sent = len(ref.get('sentences') or [])
        if file_name not in checked_images:
            if not osp.isfile(img_path):
                checked_images[file_name] = None
                report.add('missing image', f'{img_path} ({split})')
            elif args.skip_decode:  # size from the header only
                checked_images[file_name] = read_image_size(img_path)
            else:
                img = cv2.imread(img_path, cv2.IMREAD_COLOR)
                checked_images[file_name] = None if img is None \
                    else img.shape[:2]
                if img is None:
                    report.add('corrupt image', img_path)
        if not osp.isfile(img_path):
            missing.add(split, file_name, n_sent)
        ann = anns.get(ref.get('ann_id'))
        if ann is None:
            report.add(
                'missing annotation',
                f'{where}: ann_id={ref.get("ann_id")} not in '
                f'{inst_path}')
            continue
        image = images.get(ref.get('image_id'), {})
        seg = ann.get('segmentation')
        try:
            if args.skip_decode:
                mask_shape = segmentation_size(seg, image.get('height'),
                                               image.get('width'))
            else:
                mask_shape = decode_segmentation(seg, image.get('height'),
                                                 image.get('width')).shape
        except ValueError as e:
            report.add('bad mask', f'{where} ann_id={ann["id"]}: {e}')
            mask_shape = None
        shape = checked_images.get(file_name)
        if shape and mask_shape and tuple(mask_shape) != tuple(shape):
            diff = max(
                abs(shape[0] - mask_shape[0]), abs(shape[1] - mask_shape[1]))
            msg = (f'{where}: image {img_path} is {_hw(shape)}, its mask '
                   f'{_hw(mask_shape)} (h x w)')
            if diff > tol:
                report.add('size mismatch',
                           f'{msg}, more than --size-tolerance={tol} px')
            else:
                if file_name not in aligned.images[split]:
                    report.add('aligned size', msg)
                aligned.add(split, file_name, n_sent)
                largest = max(largest, diff)
        category_id = ref.get('category_id',
                              ann.get('categories_id', ann.get('category_id')))
        sentences = ref.get('sentences') or []
        if not sentences:
            report.add('no expression', where)
        for s in sentences:
            text = s.get('sent', s.get('raw'))
            try:
                check_expression(text, f'{where} sent_id={s.get("sent_id")}')
            except ValueError as e:
                report.add('empty expression', str(e))
                continue
            counts[split] += 1
            lines[split].append(
                dict(
                    split=split,
                    image_id=ref.get('image_id'),
                    sent=text.strip(),
                    file_name=file_name,
                    category_id=category_id,
                    category_name=cat_names.get(category_id),
                    ann_id=ann['id'],
                    bbox=ann.get('bbox'),
                    segmentation=seg,
                    area=ann.get('area'),
                    ref_id=ref_id,
                    sent_id=s.get('sent_id')))

    print(f'RRSIS-D at {root}: {len(refs)} refs, {len(checked_images)} '
          f'images, {len(anns)} annotations')
    for split, n in EXPECTED.items():
        note = '' if args.skip_count_check else f' (expected {n})'
        print(f'  {split:5s}: {counts[split]} expressions{note}')
        if not args.skip_count_check and counts[split] != n:
            report.add(
                'count mismatch',
                f'{split}: {counts[split]} expressions, RRSIS-D has '
                f'{n} (use --skip-count-check for subsets)')
    if missing:
        note = ('accepted (--allow-missing-images): RRSISDDataset needs '
                'skip_missing_images=True, which leaves these expressions '
                'out' if args.allow_missing_images else
                'RRSISDDataset refuses them; --allow-missing-images '
                'accepts them')
        print(f'  missing images: {missing.summary()}; {note}')
    if aligned:
        print(f'  images 1-{largest} px off their mask: {aligned.summary()}; '
              f'RRSISDDataset aligns such masks (size_tolerance={tol})')
    report.print()
    if report:
        print('\nRRSIS-D check FAILED. ' + DOWNLOAD_HINT)
        return 1
    print('\nRRSIS-D check passed.')
    if args.out_jsonl:
        os.makedirs(args.out_jsonl, exist_ok=True)
        for split, items in lines.items():
            path = osp.join(args.out_jsonl, f'rrsisd_{split}.jsonl')
            with open(path, 'w') as f:
                for item in items:
                    f.write(json.dumps(item) + '\n')
            print(f'wrote {len(items)} lines to {path}')
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Check an RRSIS-D download (and write jsonl)')
    parser.add_argument('data_root', help='RRSIS-D root, e.g. data/rrsisd')
    parser.add_argument('--ann-file', default='refs(unc).p')
    parser.add_argument('--instances', default='instances.json')
    parser.add_argument('--img-dir', default='images/rrsisd/JPEGImages')
    parser.add_argument(
        '--out-jsonl', help='write rrsisd_{split}.jsonl to this folder')
    parser.add_argument(
        '--skip-decode',
        action='store_true',
        help='only check that files exist (do not decode images and masks)')
    parser.add_argument(
        '--skip-count-check',
        action='store_true',
        help='do not compare the split sizes with 12,181 / 1,740 / 3,481')
    parser.add_argument(
        '--size-tolerance',
        type=int,
        default=DEFAULT_SIZE_TOLERANCE,
        help='largest image / mask size difference in pixels per side that '
        'passes (RRSISDDataset aligns such masks; its size_tolerance)')
    parser.add_argument(
        '--allow-missing-images',
        action='store_true',
        help='list missing image files without failing the check '
        '(RRSISDDataset then needs skip_missing_images=True)')
    parser.add_argument(
        '--show', type=int, default=20, help='problems listed per kind')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return check(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
