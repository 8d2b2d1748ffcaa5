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

Annotations are read as ``RRSISDDataset`` reads them
(``rsrefseg_mm.datasets.refer_annotations.ReferAnnotations``), so the check
fails on everything the dataset refuses: files over
``--max-annotation-bytes``, JSON nested deeper than annotations are, values
of the wrong type (``[bad annotation]``, naming the ref and what was
expected), image file names outside the image folder (``[bad image path]``),
masks over ``--max-mask-pixels`` or off their image entry's size, malformed
RLE runs or polygons (``[bad mask]``; sizes are checked before anything is
decoded). Refs of several objects (``ann_id`` a list) or of none (``[]``,
``-1``, None) are counted per split (generalized referring).

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
``sent_id`` (and the image entry's ``height`` / ``width`` when stated), one
line per (ref, sentence), those of missing images included (the dataset
decides, as for the pickle); a ref of several objects gets ``ann_id``,
``bbox`` and ``segmentation`` lists (one item per object), a ref of none
``"segmentation": []`` and ``"no_target": true``. ``RRSISDDataset`` reads
them with ``ann_file='rrsisd_<split>.jsonl'``.
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
from rsrefseg_mm.datasets.annotation_io import (  # noqa: E402
    DEFAULT_MAX_ANNOTATION_BYTES, AnnotationError, ImagePathError, is_id)
from rsrefseg_mm.datasets.mask_utils import (  # noqa: E402
    DEFAULT_MAX_MASK_PIXELS, DEFAULT_SIZE_TOLERANCE, MaskDecodeError,
    mask_error_kind, validate_segmentation)
from rsrefseg_mm.datasets.refer_annotations import (  # noqa: E402
    ReferAnnotations, ReferTarget)
from rsrefseg_mm.datasets.rrsisd import read_image_size  # noqa: E402
from rsrefseg_mm.utils import track  # noqa: E402
from rsrefseg_mm.utils.safe_pickle import PlainDataLimitError  # noqa: E402
from rsrefseg_mm.utils.safe_pickle import UnsafePickleError  # noqa: E402

EXPECTED = {'train': 12181, 'val': 1740, 'test': 3481}
DOWNLOAD_HINT = (
    'RRSIS-D comes from the RMSIN release (https://github.com/Lsan2401/RMSIN,'
    ' links in its README). Put refs(unc).p and instances.json in the data '
    'root and the images in <data_root>/images/rrsisd/JPEGImages/.')


class Report:
    """Collects problems by kind; keeps and prints the first few of each
    (and how many there are).

    Args:
        show (int): Entries kept and listed per kind.
        accepted (Iterable[str]): Kinds that are listed but do not fail the
            check.
    """

    def __init__(self, show: int = 20, accepted: Iterable[str] = ()) -> None:
        self.problems: Dict[str, List[str]] = defaultdict(list)
        self.counts: Counter = Counter()
        self.show = show
        self.accepted = set(accepted)

    def add(self, kind: str, msg: str) -> None:
        self.counts[kind] += 1
        if len(self.problems[kind]) < self.show:
            self.problems[kind].append(msg)

    def print(self) -> None:
        for kind, msgs in self.problems.items():
            what = 'accepted' if kind in self.accepted else 'problem(s)'
            print(f'\n[{kind}] {self.counts[kind]} {what}:')
            for m in msgs:
                print(f'  {m}')
            if self.counts[kind] > len(msgs):
                print(f'  ... and {self.counts[kind] - len(msgs)} more')

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


def _jsonl_line(split: str, ref: dict, target: ReferTarget,
                annotations: ReferAnnotations, file_name: str, text: str,
                sent_id) -> dict:
    """One line of ``rrsisd_<split>.jsonl`` (RSRefSeg's keys, plus
    ``ref_id``, ``sent_id``, the image entry's ``height`` / ``width`` when
    stated, and ``no_target: true`` for an expression of nothing)."""
    anns = [annotations.anns[i] for i in target.ann_ids]
    if len(anns) == 1:
        bbox, area = anns[0].get('bbox'), anns[0].get('area')
    else:
        bbox = [a.get('bbox') for a in anns] or None
        areas = [a.get('area') for a in anns]
        area = sum(areas) if all(isinstance(v, (int, float))
                                 for v in areas) else None
    line = dict(
        split=split,
        image_id=target.image_id,
        sent=text.strip(),
        file_name=file_name,
        category_id=target.category_id,
        category_name=annotations.categories.get(target.category_id)
        if is_id(target.category_id) else None,
        ann_id=target.ann_id,
        bbox=bbox,
        segmentation=target.segmentation if not target.no_target else [],
        area=area,
        ref_id=ref.get('ref_id'),
        sent_id=sent_id)
    if target.seg_size is not None:
        line.update(height=target.seg_size[0], width=target.seg_size[1])
    if target.no_target:
        line['no_target'] = True
    return line


def _mask_shape(args: argparse.Namespace, target: ReferTarget,
                shape: Optional[Tuple[int, int]], where: str,
                report: Report) -> Optional[Tuple[int, int]]:
    """The size the target's mask decodes at, checked as the dataset's
    loader checks it (runs parsed; decoded unless --skip-decode), or None
    after reporting a bad mask."""
    size = target.seg_size or shape
    mask_shape = target.mask_size or size
    if shape and mask_shape and max(
            abs(shape[0] - mask_shape[0]), abs(shape[1] - mask_shape[1])) \
            > args.size_tolerance:
        return mask_shape  # reported as a size mismatch, not decoded
    try:
        if args.skip_decode:
            validate_segmentation(
                target.segmentation,
                *(size or (None, None)),
                max_pixels=args.max_mask_pixels,
                check_runs=True)
        else:
            mask_shape = decode_segmentation(target.segmentation,
                                             *(size or (None, None)),
                                             args.max_mask_pixels).shape
    except ValueError as e:
        report.add(
            'bad mask', f'{where} ann_id={target.ann_id}: '
            f'{mask_error_kind(e)}: {e}')
        return None
    return mask_shape


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
        annotations = ReferAnnotations.load(
            ann_path,
            inst_path,
            max_annotation_bytes=args.max_annotation_bytes,
            max_mask_pixels=args.max_mask_pixels,
            size_tolerance=tol)
    except (UnsafePickleError, PlainDataLimitError, AnnotationError) as e:
        print(f'RRSIS-D check FAILED: {e}')
        return 1
    except Exception as e:
        print(f'RRSIS-D check FAILED: cannot read {ann_path} / {inst_path}: '
              f'{e!r}')
        print(DOWNLOAD_HINT)
        return 1
    refs = annotations.refs

    counts: Counter = Counter()
    generalized: Dict[str, Counter] = defaultdict(Counter)
    lines: Dict[str, List[dict]] = defaultdict(list)
    # file name -> image (h, w); None: missing, corrupt or header unreadable
    checked_images: Dict[str, Optional[Tuple[int, int]]] = {}
    missing, aligned = PerSplit(), PerSplit()
    largest = 0
    for i, ref in enumerate(track(refs, 'checking RRSIS-D refs', unit='ref')):
        ref_id = ref.get('ref_id') if isinstance(ref, dict) else None
        where = f'ref_id={ref_id!r:.40}' if ref_id is not None else \
            f'ref #{i}'
        try:
            ref = annotations.check_ref(ref, where)
        except AnnotationError as e:
            report.add('bad annotation', str(e))
            continue
        split = ref.get('split')
        if split not in EXPECTED:
            report.add('bad split', f'{where}: split={split!r:.40}')
            continue
        try:
            sentences = annotations.sentences(ref, where)
        except AnnotationError as e:
            report.add(
                'no expression'
                if not ref.get('sentences') else 'bad annotation', str(e))
            sentences = []
        try:
            file_name = annotations.file_name(ref, where)
        except ImagePathError as e:
            report.add('bad image path', str(e))
            continue
        except AnnotationError as e:
            report.add('bad annotation', str(e))
            continue
        img_path = osp.join(img_dir, file_name)
        n_sent = len(sentences)
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
        try:
            target = annotations.target(ref, where)
        except KeyError as e:
            report.add('missing annotation', str(e.args[0]))
            continue
        except MaskDecodeError as e:
            report.add('bad mask', str(e))
            continue
        except AnnotationError as e:
            report.add('bad annotation', str(e))
            continue
        shape = checked_images.get(file_name)
        mask_shape = None if target.no_target else _mask_shape(
            args, target, shape, where, report)
        if target.no_target:
            generalized[split]['no-target'] += n_sent
        elif len(target.ann_ids) > 1:
            generalized[split]['multi-target'] += n_sent
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
        for sent_id, text in sentences:
            try:
                check_expression(text, f'{where} sent_id={sent_id}')
            except ValueError as e:
                report.add('empty expression', str(e))
                continue
            counts[split] += 1
            lines[split].append(
                _jsonl_line(split, ref, target, annotations, file_name, text,
                            sent_id))

    print(f'RRSIS-D at {root}: {len(refs)} refs, {len(checked_images)} '
          f'images, {len(annotations.anns)} annotations')
    for split, n in EXPECTED.items():
        note = '' if args.skip_count_check else f' (expected {n})'
        print(f'  {split:5s}: {counts[split]} expressions{note}')
        if not args.skip_count_check and counts[split] != n:
            report.add(
                'count mismatch',
                f'{split}: {counts[split]} expressions, RRSIS-D has '
                f'{n} (use --skip-count-check for subsets)')
    if generalized:
        parts = [
            f'{split}: {g["no-target"]} no-target / {g["multi-target"]} '
            'multi-target' for split, g in generalized.items()
        ]
        print(f'  generalized referring expressions: {", ".join(parts)}')
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
        '--max-mask-pixels',
        type=int,
        default=DEFAULT_MAX_MASK_PIXELS,
        help='largest mask (height x width) decoded; larger ones fail '
        "(RRSISDDataset's max_mask_pixels)")
    parser.add_argument(
        '--max-annotation-bytes',
        type=int,
        default=DEFAULT_MAX_ANNOTATION_BYTES,
        help="largest annotation file read (RRSISDDataset's "
        'max_annotation_bytes)')
    parser.add_argument(
        '--show', type=int, default=20, help='problems listed per kind')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return check(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
