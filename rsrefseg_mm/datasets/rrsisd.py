"""RRSIS-D referring remote-sensing segmentation dataset (REFER layout)."""
import io
import logging
import numbers
import os.path as osp
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import mmengine.fileio as fileio
import numpy as np
from mmengine.fileio import LocalBackend, join_path
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from rsrefseg_core.text import check_expression
from .annotation_io import (DEFAULT_MAX_ANNOTATION_BYTES, AnnotationError,
                            check_max_bytes, expect, image_file_name, is_id,
                            load_json, optional_id, read_annotation_bytes)
from .mask_utils import (DEFAULT_MAX_MASK_PIXELS, DEFAULT_SIZE_TOLERANCE,
                         MaskDecodeError, check_max_pixels, mask_error_kind,
                         stated_size, validate_segmentation)
from .refer_annotations import (ReferAnnotations, check_no_target_flag,
                                target_ids)

REFERRING_METAINFO = dict(
    classes=('background', 'target'), palette=[[0, 0, 0], [255, 64, 64]])
#: EXIF orientations that swap width and height (the decoders apply them).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
#: Files named in the errors and warnings of the image check.
_SHOW = 5
_DOWNLOAD_HINT = (' Download RRSIS-D (https://github.com/Lsan2401/RMSIN) '
                  'and check it with `python tools/dataset_converters/'
                  'rrsisd.py <data_root>`.')


def _split_name(split: Any) -> str:
    """A split value as a key of the per-split counts."""
    return split if isinstance(split, str) else repr(split)[:40]


def read_image_size(
        path: str,
        backend_args: Optional[dict] = None) -> Optional[Tuple[int, int]]:
    """The (height, width) an image decodes at, read from its header.

    PIL parses the header only (no pixel decoding: ~0.07 ms for an RRSIS-D
    JPEG on a local disk). A JPEG's EXIF orientation is applied as cv2 and
    mmcv apply it when decoding.

    Args:
        path (str): Image path (any mmengine file backend; other than the
            local disk, the file is downloaded).
        backend_args (dict, optional): mmengine file backend arguments.

    Returns:
        tuple[int, int] | None: ``(height, width)``, or None when PIL cannot
        read the header (a corrupt file, or a raster format PIL does not
        know: the loader reports it when the sample is read).

    Raises:
        FileNotFoundError: The file does not exist.
    """
    backend = fileio.get_file_backend(path, backend_args=backend_args)
    if isinstance(backend, LocalBackend):
        if not osp.isfile(path):
            raise FileNotFoundError(path)
        source = path
    else:
        if not backend.exists(path):
            raise FileNotFoundError(path)
        source = io.BytesIO(backend.get(path))
    try:
        with Image.open(source) as im:
            width, height = im.size
            if im.format == 'JPEG' and im.getexif().get(
                    0x0112) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except Exception:  # unreadable header: the loader names the sample
        return None
    return int(height), int(width)


def _hw(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


@DATASETS.register_module()
class RRSISDDataset(BaseSegDataset):
    """RRSIS-D: referring image segmentation in remote sensing.

    Dataset of `Rotated Multi-Scale Interaction Network for Referring Remote
    Sensing Image Segmentation <https://arxiv.org/abs/2312.12470>`_ (RMSIN),
    as used by `RSRefSeg <https://arxiv.org/abs/2501.06809>`_. One sample per
    (reference, sentence) pair; the target is the referenced object's mask
    (the union of several, or none: see generalized referring below),
    labelled 1 on a 0 background (``classes=('background', 'target')``).

    Two annotation formats are read:

    1. The REFER layout of the RMSIN release (``ann_file`` a pickle of
       plain lists and dicts, read without running code: a file that asks
       for anything else raises
       :class:`~rsrefseg_mm.utils.UnsafePickleError`)::

        data/rrsisd/
        ├── refs(unc).p       # list of refs: ref_id, ann_id, image_id,
        │                     # split, file_name, category_id, sentences
        ├── instances.json    # COCO-like: images, categories,
        │                     # annotations (key spelled `categories_id`)
        └── images/rrsisd/JPEGImages/*.jpg

    2. RSRefSeg's converted jsonl (``ann_file`` ending in ``.jsonl``), one
       sample per line with keys ``split, image_id, sent, file_name,
       category_id, category_name, ann_id, bbox, segmentation, area``
       (``ref_id`` and ``sent_id`` are used when present, as written by
       ``tools/dataset_converters/rrsisd.py --out-jsonl``; otherwise
       ``ref_id`` falls back to ``ann_id`` and ``sent_id`` to the line
       number). Lines whose ``split`` differs from ``split`` are skipped. A
       line without a ``split`` key is an error naming the file and line
       (it would otherwise enter every split: train/test leakage), unless
       ``default_split`` assigns such lines to one split; a ``split`` other
       than ``train``/``val``/``test`` is an error too.

    Masks are looked up per ref through its ``ann_id`` (not per image), so
    every expression of an image with several referred objects gets its own
    object's mask.

    Generalized referring (an expression of several objects, or of none):

    - REFER: a ref whose ``ann_id`` is a list of annotation ids refers to
      all of them (the mask is their union); ``[]``, ``-1``, ``[-1]`` or
      None refers to nothing (an all-zero mask). A ``no_target`` key on the
      ref, where present, must agree (gRefCOCO writes one). A ref without
      ``ann_id`` is an error.
    - jsonl: ``segmentation`` may be a list of several objects'
      segmentations (each an RLE dict, a list of RLE dicts or a list of
      polygons; ``ann_id`` then a list of ids); a line whose expression
      refers to nothing has ``"no_target": true`` and an empty or absent
      ``segmentation`` (an empty one without it is an error).
    - ``no_target_ratio > 0`` adds no-target pairs: images of the split
      paired with expressions of another image whose category is not on
      this one (none of its annotations in ``instances.json``, none of the
      refs on it, all splits; RRSIS-D has one category per ref), so that
      they are ``no_target_ratio`` of the split. They are drawn with
      ``no_target_seed`` (the same pairs on every build) and carry the
      expression's ids and category and ``text_source`` (the index of the
      sample the expression comes from).

    Every sample carries ``no_target`` (True: :class:`LoadReferringAnnotations`
    gives an all-zero mask of the image's size and decodes nothing);
    ``ann_id`` is an id, a list (several objects) or None (no target).
    ``ReferringIoUMetric(generalized=True)`` scores such data (gIoU, N-acc,
    T-acc).

    The mask stays encoded in the data info (``segmentation``; picklable, so
    ``serialize_data`` and ``lazy_init`` work) and is decoded by
    :class:`LoadReferringAnnotations`. Each data info carries the metainfo
    keys ``text, ref_id, ann_id, image_id, sent_id, category`` (category
    name) and ``category_id``.

    Errors never fall back to another sample: a missing or unreadable
    annotation file, a ref whose ``ann_id`` is absent from
    ``instances.json``, a malformed segmentation or an empty expression raise
    an error naming the file and ref id.

    Annotation files are untrusted input, bounded before anything is built
    from them (:mod:`~rsrefseg_mm.datasets.annotation_io`,
    :mod:`~rsrefseg_mm.datasets.mask_utils`):

    - a file over ``max_annotation_bytes`` is not read; JSON nested deeper
      than 100 and a refs pickle with more than one sentence per 64 bytes
      of both files (+10,000: a pickle's shared references) are refused
      (:class:`~rsrefseg_mm.datasets.annotation_io.AnnotationLimitError`);
    - a value of the wrong type (``sentences`` a string, ``images`` a
      dict, an id that is a list ...) raises
      :class:`~rsrefseg_mm.datasets.annotation_io.AnnotationError` naming
      the file, the ref and what was expected;
    - an image ``file_name`` that is absolute or has a ``..`` component
      raises :class:`~rsrefseg_mm.datasets.annotation_io.ImagePathError`:
      every image path resolves inside ``data_prefix['img_path']``;
    - a mask over ``max_mask_pixels``, an RLE whose size differs from its
      ``instances.json`` image entry by more than ``size_tolerance``, a
      polygon outside its image (+16 px) or with an overlong boundary
      raises :class:`~rsrefseg_mm.datasets.mask_utils.MaskLimitError`
      before anything is decoded; malformed RLE runs raise
      :class:`~rsrefseg_mm.datasets.mask_utils.MaskDecodeError` when the
      sample is read, before pycocotools sees them.

    Images as downloaded (``check_images=True``, the default): when the
    dataset is built, the header of every image of the split is read (its
    size, without decoding; ~1 s for RRSIS-D's 12,181 train images on a
    local disk):

    - missing image files raise :class:`FileNotFoundError` naming how many
      and the first ones, unless ``skip_missing_images=True``: then their
      samples are left out and a warning says how many, for this split;
    - an image whose size differs from its mask (the RLE ``size``, or the
      ``instances.json`` size for polygons) by at most ``size_tolerance``
      pixels per side is reported in one warning (how many images and
      samples, the largest difference, an example file), and
      :class:`LoadReferringAnnotations` aligns its mask to the image at the
      top-left origin (cropped, or padded with ``ignore_index``); a larger
      difference raises :class:`ValueError` naming the samples, files and
      both sizes.

    The results stay on the dataset: :attr:`missing_images` (paths),
    :attr:`misaligned_images` (``{path: ((h, w) image, (h, w) mask)}``) and
    :attr:`num_no_target_pairs`.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to
            ``'train'``. RRSIS-D has 12,181 / 1,740 / 3,481 expressions.
        ann_file (str): ``refs(unc).p`` (REFER) or a ``.jsonl`` file,
            relative to ``data_root``. Defaults to ``'refs(unc).p'``.
        instances_file (str): COCO-like instances file (REFER layout only),
            relative to ``data_root``. Defaults to ``'instances.json'``.
        default_split (str, optional): Split of the jsonl lines that carry
            no ``split`` key (e.g. ``'test'`` for a file of test samples
            only). None (default): such a line is an error.
        size_tolerance (int): Largest difference in pixels, per side
            (height and width separately), between an image and its mask
            that is aligned rather than refused; 0 requires equal sizes.
            Carried to the pipeline as ``mask_size_tolerance``. Defaults to
            16 (RRSIS-D's downloaded JPEGs are 1 px or 13 px off their
            800x800 masks).
        check_images (bool): Read every image header at build (missing
            files, size differences; see above). False skips the check and
            its report (e.g. on remote storage, where it downloads every
            image): a missing image then raises when its sample is read.
            Defaults to True.
        skip_missing_images (bool): Leave out, with a warning, the samples
            whose image file is missing instead of raising. Needs
            ``check_images``. Defaults to False.
        max_mask_pixels (int): Largest mask (``h * w``) accepted; larger
            ones are refused before decoding. Carried to the pipeline as
            ``mask_max_pixels``. Defaults to 100,000,000 (RRSIS-D's masks
            have 640,000 pixels).
        max_annotation_bytes (int): Largest annotation file read (each of
            the refs pickle, ``instances.json``, the jsonl). Defaults to
            256 MiB.
        no_target_ratio (float): Share of the split made of added no-target
            pairs (see above), in ``[0, 1)``. Defaults to 0 (none; RRSIS-D
            as released).
        no_target_seed (int): Seed of the no-target pairs. Defaults to 0.
        data_prefix (dict): ``img_path`` is the image folder. Defaults to
            ``dict(img_path='images/rrsisd/JPEGImages')``.
        img_suffix (str): Unused (file names come from the annotations);
            kept for BaseSegDataset compatibility.
        metainfo (dict, optional): Overrides :attr:`METAINFO`.
        **kwargs: Other :class:`mmseg.datasets.BaseSegDataset` arguments
            (``data_root``, ``pipeline``, ``test_mode``, ``indices``,
            ``lazy_init``, ``serialize_data``, ``backend_args``, ...).
    """
    METAINFO = REFERRING_METAINFO
    SPLITS = ('train', 'val', 'test')

    def __init__(self,
                 split: str = 'train',
                 ann_file: str = 'refs(unc).p',
                 instances_file: str = 'instances.json',
                 default_split: Optional[str] = None,
                 size_tolerance: int = DEFAULT_SIZE_TOLERANCE,
                 check_images: bool = True,
                 skip_missing_images: bool = False,
                 max_mask_pixels: int = DEFAULT_MAX_MASK_PIXELS,
                 max_annotation_bytes: int = DEFAULT_MAX_ANNOTATION_BYTES,
                 no_target_ratio: float = 0.0,
                 no_target_seed: int = 0,
                 data_prefix: dict = dict(img_path='images/rrsisd/JPEGImages'),
                 img_suffix: str = '.jpg',
                 **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'split must be one of {self.SPLITS}, got '
                             f'{split!r}')
        if default_split is not None and default_split not in self.SPLITS:
            raise ValueError(f'default_split must be None or one of '
                             f'{self.SPLITS}, got {default_split!r}')
        if not isinstance(size_tolerance, int) or size_tolerance < 0:
            raise ValueError(f'size_tolerance must be an int >= 0, got '
                             f'{size_tolerance!r}')
        if skip_missing_images and not check_images:
            raise ValueError('skip_missing_images=True needs '
                             'check_images=True (missing images are found '
                             'by the image check)')
        if isinstance(no_target_ratio, bool) or not isinstance(
                no_target_ratio, numbers.Real) or not \
                0 <= no_target_ratio < 1:
            raise ValueError(f'no_target_ratio must be a number in [0, 1), '
                             f'got {no_target_ratio!r}')
        if isinstance(no_target_seed, bool) or not isinstance(
                no_target_seed, numbers.Integral) or no_target_seed < 0:
            raise ValueError(f'no_target_seed must be an int >= 0, got '
                             f'{no_target_seed!r}')
        self.max_mask_pixels = check_max_pixels(max_mask_pixels)
        self.max_annotation_bytes = check_max_bytes(max_annotation_bytes)
        self.no_target_ratio = float(no_target_ratio)
        self.no_target_seed = int(no_target_seed)
        self.num_no_target_pairs = 0
        self._split_counts: Counter = Counter()
        self._image_categories: Dict[str, Optional[Set[Any]]] = {}
        self.split = split
        self.default_split = default_split
        self.size_tolerance = size_tolerance
        self.check_images = check_images
        self.skip_missing_images = skip_missing_images
        self.missing_images: List[str] = []
        self.misaligned_images: Dict[str, Tuple[Tuple[int, int],
                                                Tuple[int, int]]] = {}
        self.instances_file = instances_file
        data_root = kwargs.get('data_root')
        if data_root and instances_file and not osp.isabs(instances_file):
            self.instances_file = join_path(data_root, instances_file)
        super().__init__(
            ann_file=ann_file,
            data_prefix=data_prefix,
            img_suffix=img_suffix,
            **kwargs)

    # ------------------------------------------------------------- parsing
    def _make_info(self, *, img_path: str, segmentation, no_target: bool,
                   seg_size: Optional[Tuple[int, int]],
                   mask_size: Optional[Tuple[int, int]], text, ref_id, ann_id,
                   image_id, sent_id, category_id, category: Optional[str],
                   where: str) -> dict:
        return dict(
            img_path=img_path,
            seg_map_path=None,
            segmentation=segmentation,
            no_target=no_target,
            seg_size=seg_size,
            mask_size=mask_size,
            mask_source=where,
            text=check_expression(text, where),
            ref_id=ref_id,
            ann_id=ann_id,
            image_id=image_id,
            sent_id=sent_id,
            category_id=category_id,
            category=category,
            mask_size_tolerance=self.size_tolerance,
            mask_max_pixels=self.max_mask_pixels,
            label_map=self.label_map,
            reduce_zero_label=self.reduce_zero_label,
            seg_fields=[])

    def _img_path(self, file_name: str) -> str:
        return join_path(self.data_prefix.get('img_path', ''), file_name)

    def _load_refer(self) -> List[dict]:
        annotations = ReferAnnotations.load(
            self.ann_file,
            self.instances_file,
            backend_args=self.backend_args,
            max_annotation_bytes=self.max_annotation_bytes,
            hint=_DOWNLOAD_HINT,
            max_mask_pixels=self.max_mask_pixels,
            size_tolerance=self.size_tolerance)
        data_list = []
        for i, ref in enumerate(annotations.refs):
            where = annotations.ref_where(ref, i)
            ref = annotations.check_ref(ref, where)
            split = ref.get('split')
            if split != self.split:
                sentences = ref.get('sentences')
                self._split_counts[_split_name(split)] += len(
                    sentences) if isinstance(sentences, list) else 0
                continue
            sentences = annotations.sentences(ref, where)
            self._split_counts[split] += len(sentences)
            ref_id = optional_id(ref.get('ref_id'), where, 'ref_id')
            target = annotations.target(ref, where)
            img_path = self._img_path(annotations.file_name(ref, where))
            category = annotations.categories.get(target.category_id) \
                if is_id(target.category_id) else None
            for sent_id, text in sentences:
                data_list.append(
                    self._make_info(
                        img_path=img_path,
                        segmentation=target.segmentation,
                        no_target=target.no_target,
                        seg_size=target.seg_size,
                        mask_size=target.mask_size,
                        text=text,
                        ref_id=ref_id,
                        ann_id=target.ann_id,
                        image_id=target.image_id,
                        sent_id=sent_id,
                        category_id=target.category_id,
                        category=category,
                        where=f'{where} sent_id={sent_id}'))
        if self.no_target_ratio:
            self._image_categories = {
                self._img_path(name): cats
                for name, cats in annotations.image_categories().items()
            }
        return data_list

    def _load_jsonl(self) -> List[dict]:
        raw = read_annotation_bytes(self.ann_file, 'annotation file',
                                    self.max_annotation_bytes,
                                    self.backend_args, _DOWNLOAD_HINT)
        try:
            lines = raw.decode('utf-8').splitlines()
        except UnicodeDecodeError as e:
            raise AnnotationError(f'{self.ann_file}: not UTF-8 text: {e}')
        del raw
        data_list = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f'{self.ann_file}:{lineno}'
            item = expect(load_json(line, where), dict, where, 'a JSON object')
            split = self._jsonl_split(item, where)
            self._split_counts[split] += 1
            if split != self.split:
                if self.no_target_ratio:
                    self._other_split_category(item)
                continue
            ann_ids = target_ids(item.get('ann_id'), where)
            ann_id = ann_ids[0] if len(ann_ids) == 1 else (ann_ids or None)
            ref_id = optional_id(
                item.get('ref_id', ann_id if is_id(ann_id) else lineno), where,
                'ref_id')
            where = f'{where} ref_id={ref_id!r:.40}'
            no_target, seg, seg_size = self._jsonl_target(item, where)
            img_path = self._img_path(
                image_file_name(item.get('file_name'), where))
            category_id = optional_id(
                item.get('category_id'), where, 'category_id')
            category = item.get('category_name')
            if category is not None:
                expect(category, str, where, '"category_name", a string')
            text = item.get('sent')
            if text is not None:
                expect(text, str, where, '"sent", the expression text')
            if self.no_target_ratio and not no_target:
                self._add_image_category(img_path, category_id)
            data_list.append(
                self._make_info(
                    img_path=img_path,
                    segmentation=seg,
                    no_target=no_target,
                    seg_size=seg_size,
                    mask_size=None if no_target else seg_size,
                    text=text,
                    ref_id=ref_id,
                    ann_id=None if no_target else ann_id,
                    image_id=optional_id(
                        item.get('image_id'), where, 'image_id'),
                    sent_id=optional_id(
                        item.get('sent_id', lineno), where, 'sent_id'),
                    category_id=category_id,
                    category=category,
                    where=where))
        return data_list

    def _jsonl_target(self, item: dict, where: str) -> tuple:
        """``(no_target, segmentation, seg_size)`` of a jsonl line, checked
        (not decoded)."""
        seg = item.get('segmentation')
        empty = seg is None or (isinstance(seg, (list, tuple)) and not seg)
        flag = item.get('no_target')
        if flag is None and empty:
            raise MaskDecodeError(
                f'{where}: malformed segmentation: "segmentation" is '
                'missing or empty; a line whose expression refers to nothing '
                'says "no_target": true')
        check_no_target_flag(flag, empty, where)
        h, w = item.get('height'), item.get('width')
        try:
            if empty:
                return True, None, stated_size(h, w, self.max_mask_pixels)
            return False, seg, validate_segmentation(
                seg,
                h,
                w,
                max_pixels=self.max_mask_pixels,
                size_tolerance=self.size_tolerance)
        except MaskDecodeError as e:
            raise type(e)(f'{where}: {mask_error_kind(e)}: {e}') from None

    def _other_split_category(self, item: dict) -> None:
        """Record the category of a line of another split on its image
        (its objects are in the image whatever the split)."""
        seg = item.get('segmentation')
        if item.get('no_target') is True or not seg:
            return
        name = item.get('file_name')
        try:
            image_file_name(name, '')
        except ValueError:
            return
        self._add_image_category(self._img_path(name), item.get('category_id'))

    def _add_image_category(self, img_path: str, category_id: Any) -> None:
        """Record a category on an image (for no-target pairs)."""
        cats = self._image_categories
        if img_path in cats and cats[img_path] is None:
            return
        if category_id is None or not is_id(category_id):
            cats[img_path] = None
        else:
            cats[img_path] = cats.get(img_path, set()) | {category_id}

    def _jsonl_split(self, item: dict, where: str) -> str:
        """The split of one jsonl line (``default_split`` when it has none).

        Raises:
            ValueError: No ``split`` key and no ``default_split``, or an
                unknown split name; the message names ``where``
                (``file:line``).
        """
        split = item.get('split', self.default_split)
        if split is None:
            raise ValueError(
                f'{where}: the line has no "split" key, so it would enter '
                f'every split (train/val/test leakage). Add "split" to each '
                f'line or pass default_split=... to {type(self).__name__} '
                f'to assign such lines to one split.')
        if split not in self.SPLITS:
            raise ValueError(f'{where}: unknown split {split!r}; expected '
                             f'one of {self.SPLITS}')
        return split

    def load_data_list(self) -> List[dict]:
        """Load one data info per (ref, sentence) of ``self.split``.

        Returns:
            list[dict]: Data infos (see the class docstring).
        """
        self._split_counts = Counter()
        self._image_categories = {}
        if self.ann_file.endswith('.jsonl'):
            data_list = self._load_jsonl()
        else:
            data_list = self._load_refer()
        if not data_list:
            raise ValueError(
                f'{type(self).__name__}: no samples for split='
                f'{self.split!r} in {self.ann_file}; samples per split '
                f'there: {dict(self._split_counts)}. (val and test are '
                'distinct RRSIS-D splits.)')
        if self.check_images:
            data_list = self._check_images(data_list)
        if self.no_target_ratio:
            data_list = data_list + self._no_target_pairs(data_list)
        self._image_categories = {}
        return data_list

    # ---------------------------------------------------- no-target pairs
    def _no_target_pairs(self, data_list: List[dict]) -> List[dict]:
        """Pair images with expressions of categories absent from them.

        ``round(n * r / (1 - r))`` pairs for ``n`` samples and ratio ``r``,
        so that they are ``r`` of the split. Each draws (with
        ``no_target_seed``) an image of the split uniformly among those
        with an eligible expression, then an expression uniformly among the
        split's samples whose category is not among the image's categories
        (its objects in ``instances.json`` and the targets of every ref on
        it, all splits). Images with an object of unknown category and
        expressions of unknown category take no part.

        Returns:
            list[dict]: The no-target samples (``no_target=True``, no
            segmentation, ``text_source`` the index of the sample the
            expression comes from).

        Raises:
            ValueError: No image lacks a category that an expression of the
                split refers to.
        """
        n = len(data_list)
        num = int(round(n * self.no_target_ratio / (1 - self.no_target_ratio)))
        donors: Dict[Any, List[int]] = {}
        for i, info in enumerate(data_list):
            if not info['no_target'] and is_id(info['category_id']):
                donors.setdefault(info['category_id'], []).append(i)
        hosts: List[Tuple[int, List[Any], np.ndarray]] = []
        seen: Set[str] = set()
        for i, info in enumerate(data_list):
            if info['img_path'] in seen:
                continue
            seen.add(info['img_path'])
            present = self._image_categories.get(info['img_path'], set())
            if present is None:
                continue
            eligible = [c for c in donors if c not in present]
            if eligible:
                hosts.append((i, eligible,
                              np.cumsum([len(donors[c]) for c in eligible])))
        if not hosts:
            raise ValueError(
                f'{self._name}: no_target_ratio={self.no_target_ratio} '
                'needs an image without some category that an expression '
                f'of the split refers to; none of the {len(seen)} images '
                'qualifies (each has every category, or objects of unknown '
                'category)')
        rng = np.random.default_rng(self.no_target_seed)
        pairs = []
        for k in range(num):
            host, eligible, cum = hosts[int(rng.integers(len(hosts)))]
            r = int(rng.integers(cum[-1]))
            c = int(np.searchsorted(cum, r, side='right'))
            donor = donors[eligible[c]][r - (int(cum[c - 1]) if c else 0)]
            pairs.append(
                self._no_target_info(data_list[host], data_list[donor], donor,
                                     k))
        self.num_no_target_pairs = len(pairs)
        print_log(
            f'{self._name}: added {len(pairs)} no-target samples '
            f'(no_target_ratio={self.no_target_ratio}, '
            f'no_target_seed={self.no_target_seed}) to {n}: images paired '
            f'with expressions of categories absent from them, drawn from '
            f'{len(hosts)} of {len(seen)} images',
            logger='current')
        return pairs

    def _no_target_info(self, host: dict, donor: dict, donor_index: int,
                        k: int) -> dict:
        """The data info of the ``k``-th no-target pair."""
        return dict(
            host,
            segmentation=None,
            no_target=True,
            mask_size=None,
            mask_source=f'{self._name} no-target pair {k} (image of '
            f'{host["mask_source"]}, expression of {donor["mask_source"]})',
            text=donor['text'],
            ref_id=donor['ref_id'],
            ann_id=None,
            sent_id=donor['sent_id'],
            category_id=donor['category_id'],
            category=donor['category'],
            text_source=donor_index)

    # -------------------------------------------------------- image check
    @property
    def _name(self) -> str:
        return f'{type(self).__name__}(split={self.split!r})'

    def _check_images(self, data_list: List[dict]) -> List[dict]:
        """Find missing images and images a few pixels off their masks.

        Args:
            data_list (list[dict]): Data infos of the split.

        Returns:
            list[dict]: ``data_list``, less the samples of missing images
            when ``skip_missing_images``.

        Raises:
            FileNotFoundError: Missing images (without
                ``skip_missing_images``).
            ValueError: An image off its mask by more than
                ``size_tolerance``.
        """
        sizes: Dict[str, Optional[Tuple[int, int]]] = {}
        missing: List[str] = []
        for info in data_list:
            path = info['img_path']
            if path in sizes:
                continue
            try:
                sizes[path] = read_image_size(path, self.backend_args)
            except FileNotFoundError:
                sizes[path] = None
                missing.append(path)
        self.missing_images = missing
        if missing:
            data_list = self._drop_missing(data_list, set(missing))
        self._check_sizes(data_list, sizes)
        return data_list

    def _drop_missing(self, data_list: List[dict], missing: set) -> List[dict]:
        """Raise for missing images, or leave out their samples."""
        kept = [info for info in data_list if info['img_path'] not in missing]
        n_img = len(missing)
        n_all = n_img + len({info['img_path'] for info in kept})
        n_skip = len(data_list) - len(kept)
        more = f' and {n_img - _SHOW} more' if n_img > _SHOW else ''
        files = f'{", ".join(self.missing_images[:_SHOW])}{more}'
        if not self.skip_missing_images:
            raise FileNotFoundError(
                f'{self._name}: {n_img} of {n_all} image files are missing '
                f'({n_skip} of {len(data_list)} samples): {files}. List '
                'them per split with `python tools/dataset_converters/'
                'rrsisd.py <data_root>`; skip_missing_images=True leaves '
                f'their samples out (e.g. --cfg-options {self.split}_'
                'dataloader.dataset.skip_missing_images=True).')
        if not kept:
            raise FileNotFoundError(
                f'{self._name}: no sample left: all {n_img} image files '
                f'are missing: {files}')
        print_log(
            f'{self._name}: skipped {n_skip} of {len(data_list)} samples '
            f'(skip_missing_images=True): their {n_img} of {n_all} image '
            f'files are missing: {files}',
            logger='current',
            level=logging.WARNING)
        return kept

    def _check_sizes(self, data_list: List[dict],
                     sizes: Dict[str, Optional[Tuple[int, int]]]) -> None:
        """Report images a few pixels off their masks; raise beyond
        ``size_tolerance``."""
        tol = self.size_tolerance
        off: Dict[str, Tuple[Tuple[int, int], Tuple[int, int]]] = {}
        n_samples, largest, too_far = 0, 0, []
        for info in data_list:
            img = sizes.get(info['img_path'])
            ann = info['mask_size']  # None: no target, or polygons unsized
            if img is None or ann is None or ann == img:
                continue
            diff = max(abs(img[0] - ann[0]), abs(img[1] - ann[1]))
            if diff > tol:
                too_far.append(f'{info["mask_source"]}: image '
                               f'{info["img_path"]} is {_hw(img)}, its mask '
                               f'{_hw(ann)}')
                continue
            off.setdefault(info['img_path'], (img, ann))
            n_samples += 1
            largest = max(largest, diff)
        self.misaligned_images = off
        if too_far:
            more = (f'; and {len(too_far) - _SHOW} more'
                    if len(too_far) > _SHOW else '')
            raise ValueError(
                f'{self._name}: {len(too_far)} samples have an image whose '
                f'size (h x w) differs from their mask by more than '
                f'size_tolerance={tol} px per side: '
                f'{"; ".join(too_far[:_SHOW])}{more}. Check the download '
                'with `python tools/dataset_converters/rrsisd.py '
                '<data_root>`.')
        if off:
            path, (img, ann) = next(iter(off.items()))
            n_images = len({info['img_path'] for info in data_list})
            print_log(
                f'{self._name}: {len(off)} of {n_images} images '
                f'({n_samples} of {len(data_list)} samples) differ in size '
                f'from their mask by up to {largest} px per side (e.g. '
                f'{path}: image {_hw(img)}, mask {_hw(ann)}, h x w); '
                'LoadReferringAnnotations crops / pads those masks at the '
                'top-left to the image size, padding with its pad_value '
                f'(ignore_index by default) (size_tolerance={tol})',
                logger='current',
                level=logging.WARNING)

    def get_cat_ids(self, idx: int) -> List[int]:
        """Category id of the referred object (for class-balanced wrappers).

        Args:
            idx (int): Sample index.

        Returns:
            list[int]: ``[category_id]`` or ``[]`` when unknown.
        """
        cat = self.get_data_info(idx).get('category_id')
        return [] if cat is None else [cat]

    @property
    def categories(self) -> Sequence[str]:
        """Sorted category names present in the loaded split."""
        return sorted({
            self.get_data_info(i)['category']
            for i in range(len(self))
            if self.get_data_info(i)['category'] is not None
        })
