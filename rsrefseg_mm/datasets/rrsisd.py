"""RRSIS-D referring remote-sensing segmentation dataset (REFER layout)."""
import io
import json
import logging
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import mmengine.fileio as fileio
from mmengine.fileio import LocalBackend, join_path
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from rsrefseg_core.text import check_expression
from ..utils.safe_pickle import UnsafePickleError, load_plain_pickle
from .mask_utils import (DEFAULT_SIZE_TOLERANCE, segmentation_size,
                         validate_segmentation)

REFERRING_METAINFO = dict(
    classes=('background', 'target'), palette=[[0, 0, 0], [255, 64, 64]])
#: EXIF orientations that swap width and height (the decoders apply them).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
#: Files named in the errors and warnings of the image check.
_SHOW = 5


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
    (reference, sentence) pair; the target is the referenced object's mask,
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

    The mask stays encoded in the data info (``segmentation``; picklable, so
    ``serialize_data`` and ``lazy_init`` work) and is decoded by
    :class:`LoadReferringAnnotations`. Each data info carries the metainfo
    keys ``text, ref_id, ann_id, image_id, sent_id, category`` (category
    name) and ``category_id``.

    Errors never fall back to another sample: a missing or unreadable
    annotation file, a ref whose ``ann_id`` is absent from
    ``instances.json``, a malformed segmentation or an empty expression raise
    an error naming the file and ref id.

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

    The results stay on the dataset: :attr:`missing_images` (paths) and
    :attr:`misaligned_images` (``{path: ((h, w) image, (h, w) mask)}``).

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

    # ------------------------------------------------------------------ io
    def _read_bytes(self, path: str, what: str) -> bytes:
        try:
            return fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'{type(self).__name__}: {what} {path} not found. Download '
                'RRSIS-D (https://github.com/Lsan2401/RMSIN) and check it '
                'with `python tools/dataset_converters/rrsisd.py '
                '<data_root>`.') from None

    def _load_refs(self) -> List[dict]:
        raw = self._read_bytes(self.ann_file, 'annotation file')
        try:
            refs = load_plain_pickle(raw, self.ann_file)
        except UnsafePickleError:
            raise
        except Exception as e:
            raise ValueError(f'{type(self).__name__}: cannot unpickle '
                             f'annotation file {self.ann_file}: {e!r}')
        if not isinstance(refs, list):
            raise ValueError(f'{self.ann_file}: expected a list of refs, got '
                             f'{type(refs).__name__}')
        return refs

    def _load_instances(self) -> dict:
        raw = self._read_bytes(self.instances_file, 'instances file')
        try:
            instances = json.loads(raw)
        except Exception as e:
            raise ValueError(f'{type(self).__name__}: cannot parse instances '
                             f'file {self.instances_file}: {e!r}')
        if not isinstance(instances, dict) or \
                'annotations' not in instances:
            raise ValueError(f'{self.instances_file}: expected a dict with '
                             '"annotations" (COCO layout)')
        return instances

    # ------------------------------------------------------------- parsing
    def _make_info(self, *, file_name: str, segmentation, text: str, ref_id,
                   ann_id, image_id, sent_id, category_id,
                   category: Optional[str], height: Optional[int],
                   width: Optional[int], where: str) -> dict:
        try:
            validate_segmentation(segmentation)
        except ValueError as e:
            raise ValueError(f'{where}: malformed segmentation: {e}')
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f'{where}: missing "file_name"')
        return dict(
            img_path=join_path(
                self.data_prefix.get('img_path', ''), file_name),
            seg_map_path=None,
            segmentation=segmentation,
            seg_size=(int(height), int(width))
            if height is not None and width is not None else None,
            mask_source=where,
            text=check_expression(text, where),
            ref_id=ref_id,
            ann_id=ann_id,
            image_id=image_id,
            sent_id=sent_id,
            category_id=category_id,
            category=category,
            mask_size_tolerance=self.size_tolerance,
            label_map=self.label_map,
            reduce_zero_label=self.reduce_zero_label,
            seg_fields=[])

    def _load_refer(self) -> List[dict]:
        refs = self._load_refs()
        instances = self._load_instances()
        anns = {a['id']: a for a in instances['annotations']}
        images = {im['id']: im for im in instances.get('images', [])}
        cat_names = {
            c['id']: c['name']
            for c in instances.get('categories', [])
        }
        data_list = []
        for ref in refs:
            if ref.get('split') != self.split:
                continue
            ref_id = ref.get('ref_id')
            where = f'{self.ann_file} ref_id={ref_id}'
            ann_id = ref.get('ann_id')
            if ann_id not in anns:
                raise KeyError(f'{where}: ann_id={ann_id} is not in '
                               f'{self.instances_file}')
            ann = anns[ann_id]
            image_id = ref.get('image_id', ann.get('image_id'))
            # RRSIS-D spells the annotation key `categories_id`
            category_id = ref.get(
                'category_id', ann.get('category_id',
                                       ann.get('categories_id')))
            image = images.get(image_id, {})
            file_name = ref.get('file_name', image.get('file_name'))
            sentences = ref.get('sentences') or []
            if not sentences:
                raise ValueError(f'{where}: no sentences')
            for i, sent in enumerate(sentences):
                sent_id = sent.get('sent_id', i)
                text = sent.get('sent', sent.get('raw'))
                data_list.append(
                    self._make_info(
                        file_name=file_name,
                        segmentation=ann.get('segmentation'),
                        text=text,
                        ref_id=ref_id,
                        ann_id=ann_id,
                        image_id=image_id,
                        sent_id=sent_id,
                        category_id=category_id,
                        category=cat_names.get(category_id),
                        height=image.get('height'),
                        width=image.get('width'),
                        where=f'{where} sent_id={sent_id}'))
        return data_list

    def _load_jsonl(self) -> List[dict]:
        raw = self._read_bytes(self.ann_file, 'annotation file')
        try:
            lines = raw.decode('utf-8').splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f'{self.ann_file}: not UTF-8 text: {e}')
        data_list = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f'{self.ann_file}:{lineno}'
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{where}: invalid JSON: {e}')
            if not isinstance(item, dict):
                raise ValueError(f'{where}: expected a JSON object, got '
                                 f'{type(item).__name__}')
            if self._jsonl_split(item, where) != self.split:
                continue
            ann_id = item.get('ann_id')
            ref_id = item.get('ref_id',
                              ann_id if ann_id is not None else lineno)
            sent_id = item.get('sent_id', lineno)
            size = None
            seg = item.get('segmentation')
            if isinstance(seg, dict):
                size = seg.get('size')
            elif isinstance(seg, list) and seg and isinstance(seg[0], dict):
                size = seg[0].get('size')
            h, w = (
                size if isinstance(size, (list, tuple)) and len(size) == 2 else
                (item.get('height'), item.get('width')))
            data_list.append(
                self._make_info(
                    file_name=item.get('file_name'),
                    segmentation=seg,
                    text=item.get('sent'),
                    ref_id=ref_id,
                    ann_id=ann_id,
                    image_id=item.get('image_id'),
                    sent_id=sent_id,
                    category_id=item.get('category_id'),
                    category=item.get('category_name'),
                    height=h,
                    width=w,
                    where=f'{where} ref_id={ref_id}'))
        return data_list

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

    def _available_splits(self) -> Dict[str, int]:
        """Count samples per split (for the empty-split error message)."""
        counts: Counter = Counter()
        try:
            if self.ann_file.endswith('.jsonl'):
                raw = self._read_bytes(self.ann_file, 'annotation file')
                for line in raw.decode('utf-8').splitlines():
                    if line.strip():
                        counts[json.loads(line).get('split',
                                                    self.default_split)] += 1
            else:
                for ref in self._load_refs():
                    counts[ref.get('split')] += len(ref.get('sentences', []))
        except Exception:  # only used to enrich an error message
            pass
        return dict(counts)

    def load_data_list(self) -> List[dict]:
        """Load one data info per (ref, sentence) of ``self.split``.

        Returns:
            list[dict]: Data infos (see the class docstring).
        """
        if self.ann_file.endswith('.jsonl'):
            data_list = self._load_jsonl()
        else:
            data_list = self._load_refer()
        if not data_list:
            raise ValueError(
                f'{type(self).__name__}: no samples for split='
                f'{self.split!r} in {self.ann_file}; samples per split '
                f'there: {self._available_splits()}. (val and test are '
                'distinct RRSIS-D splits.)')
        if self.check_images:
            data_list = self._check_images(data_list)
        return data_list

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
            if img is None:
                continue
            ann = segmentation_size(info['segmentation'],
                                    *(info['seg_size'] or (None, None)))
            if ann is None or ann == img:
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
