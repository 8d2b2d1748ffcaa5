"""REFER-layout annotations (a refs pickle and a COCO-like instances.json),
checked as they are read.

:class:`RRSISDDataset` and the RRSIS-D checker
(``tools/dataset_converters/rrsisd.py``) read them through
:class:`ReferAnnotations`, so the checker fails on everything the dataset
refuses. What a ref refers to (:meth:`ReferAnnotations.target`):

- ``ann_id`` an annotation id: one object (RRSIS-D);
- ``ann_id`` a list of annotation ids: several objects, the mask is their
  union (generalized referring);
- ``ann_id`` ``[]``, ``-1``, ``[-1]`` or None: no object (an all-zero
  mask); ``no_target: True`` on the ref says the same and must agree with
  ``ann_id``. A ref without an ``ann_id`` key is an error.

A pickle can make a small file stand for many sentences (its memo
references one sentence again and again); each becomes a sample of
~2 KB. So the refs may hold at most one sentence per
:data:`BYTES_PER_SENTENCE` bytes of both files, plus
:data:`MIN_SENTENCES` (a REFER sentence takes ~100 bytes of refs and its
mask hundreds of bytes of instances: RRSIS-D stays far below the bound).
"""
import numbers
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ..utils.safe_pickle import (PlainDataLimitError, UnsafePickleError,
                                 load_plain_pickle)
from .annotation_io import (DEFAULT_MAX_ANNOTATION_BYTES, AnnotationError,
                            AnnotationLimitError, expect, image_file_name,
                            is_id, load_json, optional_id,
                            read_annotation_bytes)
from .mask_utils import (DEFAULT_MAX_MASK_PIXELS, DEFAULT_SIZE_TOLERANCE,
                         MaskDecodeError, check_max_pixels, mask_error_kind,
                         short_repr, validate_segmentation)


def target_ids(value: Any, where: str) -> List[Any]:
    """The annotation ids a ref's (or jsonl line's) ``ann_id`` names.

    Args:
        value: ``ann_id`` as read: an id, a list of ids, or ``[]`` / ``-1``
            / ``[-1]`` / None for no target.
        where (str): File and ref, for messages.

    Returns:
        list: The ids in order, without repeats; ``[]`` for no target.

    Raises:
        AnnotationError: Another type, or ``-1`` among real ids.
    """
    if value is None or (is_id(value) and value == -1):
        return []
    if is_id(value):
        return [value]
    expect(
        value, (list, tuple), where,
        '"ann_id", an annotation id, a list of them, or [] / -1 / None '
        '(no target)')
    ids: List[Any] = []
    for v in value:
        if not is_id(v):
            expect(v, (int, str), where, 'annotation ids in "ann_id"')
        if v not in ids:
            ids.append(v)
    if ids == [-1]:
        return []
    if -1 in ids:
        raise AnnotationError(f'{where}: "ann_id" {short_repr(value)} mixes '
                              '-1 (no target) with annotation ids')
    return ids


def check_no_target_flag(flag: Any, no_target: bool, where: str) -> None:
    """A ``no_target`` key, where present, must agree with the targets."""
    if flag is None:
        return
    expect(flag, bool, where, '"no_target", true or false')
    if flag != no_target:
        raise AnnotationError(
            f'{where}: "no_target" is {flag} but the entry names '
            f'{"no" if no_target else "a"} target')


#: Bytes of annotation files (refs + instances) per sentence, at least.
BYTES_PER_SENTENCE = 64
#: Sentences always accepted, whatever the files' size.
MIN_SENTENCES = 10_000


class ReferTarget:
    """What one ref refers to.

    Attributes:
        ann_ids (list): Annotation ids; empty for no target.
        image_id: The ref's ``image_id`` (else its first target's).
        segmentation: The target's segmentation, a list of the targets'
            segmentations (several), or None (no target).
        seg_size (tuple[int, int] | None): The image size the annotation
            states (``instances.json`` image entry), (h, w).
        mask_size (tuple[int, int] | None): The size the mask decodes at
            (None: polygons without a stated size, or no target).
        category_id: The ref's category (its ``category_id``, else the one
            category of its targets), or None.
        categories (set): The categories of its targets.
    """

    def __init__(self, ann_ids: List[Any], image_id: Any, segmentation: Any,
                 seg_size: Optional[Tuple[int, int]],
                 mask_size: Optional[Tuple[int, int]], category_id: Any,
                 categories: Set[Any]) -> None:
        self.ann_ids = ann_ids
        self.image_id = image_id
        self.segmentation = segmentation
        self.seg_size = seg_size
        self.mask_size = mask_size
        self.category_id = category_id
        self.categories = categories

    @property
    def no_target(self) -> bool:
        return not self.ann_ids

    @property
    def ann_id(self) -> Any:
        """The id (one target), the list (several) or None (no target)."""
        if len(self.ann_ids) == 1:
            return self.ann_ids[0]
        return list(self.ann_ids) or None


class ReferAnnotations:
    """The refs and instances of a REFER-layout dataset, checked.

    Args:
        refs: The unpickled refs (a list of dicts).
        instances: The parsed ``instances.json`` (a dict with
            ``annotations``, optionally ``images`` and ``categories``).
        refs_file (str): Refs file name, for messages.
        instances_file (str): Instances file name, for messages.
        max_mask_pixels (int): Largest mask (see
            :func:`~rsrefseg_mm.datasets.mask_utils.validate_segmentation`).
        size_tolerance (int): Largest difference per side between an RLE's
            size and its image entry's.
        source_bytes (int, optional): Size of both files; more than
            ``MIN_SENTENCES + source_bytes / BYTES_PER_SENTENCE`` sentences
            are refused. None: no bound.

    Raises:
        AnnotationError: A file whose top level, ``annotations``,
            ``images`` or ``categories`` has the wrong type (named).
        AnnotationLimitError: More sentences than the files can hold
            without shared references.
    """

    def __init__(self,
                 refs: Any,
                 instances: Any,
                 refs_file: str = 'refs',
                 instances_file: str = 'instances.json',
                 max_mask_pixels: int = DEFAULT_MAX_MASK_PIXELS,
                 size_tolerance: int = DEFAULT_SIZE_TOLERANCE,
                 source_bytes: Optional[int] = None) -> None:
        self.refs_file = refs_file
        self.instances_file = instances_file
        self.max_mask_pixels = check_max_pixels(max_mask_pixels)
        self.size_tolerance = size_tolerance
        self.refs: List[dict] = expect(refs, list, refs_file, 'a list of refs')
        if source_bytes is not None:
            self._check_sentence_count(source_bytes)
        expect(instances, dict, instances_file,
               'a dict with "annotations" (COCO layout)')
        if 'annotations' not in instances:
            raise AnnotationError(f'{instances_file}: expected a dict with '
                                  '"annotations" (COCO layout), got keys '
                                  f'{sorted(map(str, instances))[:10]}')
        self.anns = self._index(instances['annotations'], 'annotations',
                                'annotation')
        self.images = self._index(
            instances.get('images', []), 'images', 'image entry')
        self.categories: Dict[Any, Optional[str]] = {}
        for i, c in self._index(
                instances.get('categories', []), 'categories',
                'category').items():
            name = c.get('name')
            if name is not None:
                expect(name, str, f'{instances_file} category {i!r:.40}',
                       '"name", a string')
            self.categories[i] = name
        self._checked: Dict[Tuple, Tuple] = {}

    def _check_sentence_count(self, source_bytes: int) -> None:
        """Refuse refs that expand far beyond their files."""
        limit = MIN_SENTENCES + source_bytes // BYTES_PER_SENTENCE
        count = 0
        for ref in self.refs:
            sentences = ref.get('sentences') if isinstance(ref, dict) else None
            count += len(sentences) if isinstance(sentences, list) else 0
            if count > limit:
                raise AnnotationLimitError(
                    f'{self.refs_file}: more than {limit:,} sentences in '
                    f'{source_bytes:,} bytes of annotation files (one per '
                    f'{BYTES_PER_SENTENCE} bytes + {MIN_SENTENCES:,}): the '
                    'refs repeat shared sentences far beyond what annotation '
                    'files hold; refused before building samples')

    @classmethod
    def load(cls,
             refs_file: str,
             instances_file: str,
             backend_args: Optional[dict] = None,
             max_annotation_bytes: int = DEFAULT_MAX_ANNOTATION_BYTES,
             hint: str = '',
             **kwargs) -> 'ReferAnnotations':
        """Read both files (each at most ``max_annotation_bytes``).

        Args:
            refs_file (str): The refs pickle (read without running code).
            instances_file (str): The instances JSON.
            backend_args (dict, optional): mmengine file backend arguments.
            max_annotation_bytes (int): Largest file read.
            hint (str): Appended to a not-found message.
            **kwargs: ``max_mask_pixels``, ``size_tolerance``.

        Raises:
            FileNotFoundError: A missing file.
            UnsafePickleError / PlainDataLimitError: See
                :mod:`rsrefseg_mm.utils.safe_pickle`.
            AnnotationError: Unreadable or malformed content (named).
        """
        raw = read_annotation_bytes(refs_file, 'annotation file',
                                    max_annotation_bytes, backend_args, hint)
        source_bytes = len(raw)
        try:
            refs = load_plain_pickle(raw, refs_file)
        except (UnsafePickleError, PlainDataLimitError):
            raise
        except RecursionError:
            raise AnnotationError(f'{refs_file}: the pickle nests too deep '
                                  'to be read') from None
        except Exception as e:
            raise AnnotationError(f'cannot unpickle annotation file '
                                  f'{refs_file}: {e!r:.300}') from None
        del raw
        raw = read_annotation_bytes(instances_file, 'instances file',
                                    max_annotation_bytes, backend_args, hint)
        source_bytes += len(raw)
        instances = load_json(raw, instances_file)
        del raw
        return cls(
            refs,
            instances,
            refs_file,
            instances_file,
            source_bytes=source_bytes,
            **kwargs)

    # ------------------------------------------------------------ indices
    def _index(self, items: Any, key: str, what: str) -> Dict[Any, dict]:
        """``{id: item}`` of a list of dicts with an ``id``."""
        where = f'{self.instances_file} "{key}"'
        expect(items, list, where, f'a list of {what} dicts')
        index = {}
        for i, item in enumerate(items):
            expect(item, dict, f'{where}[{i}]', f'a {what} dict')
            if not is_id(item.get('id')):
                expect(
                    item.get('id'), (int, str), f'{where}[{i}]',
                    f'an "id" (int or str) for the {what}')
            index[item['id']] = item
        return index

    def ref_where(self, ref: Any, index: int) -> str:
        """``'<refs file> ref_id=<id>'`` (or the ref's position)."""
        if isinstance(ref, dict) and ref.get('ref_id') is not None:
            return f'{self.refs_file} ref_id={ref.get("ref_id")!r:.40}'
        return f'{self.refs_file} ref #{index}'

    def check_ref(self, ref: Any, where: str) -> dict:
        """The ref itself must be a dict."""
        return expect(ref, dict, where, 'a ref dict')

    @staticmethod
    def ann_category(ann: dict) -> Any:
        """An annotation's category (RRSIS-D spells it ``categories_id``)."""
        return ann.get('category_id', ann.get('categories_id'))

    # --------------------------------------------------------------- refs
    def targets(self, ref: dict, where: str) -> Tuple[List[Any], List[dict]]:
        """The ids and annotations ``ref`` refers to (none: no target).

        Raises:
            KeyError: An ``ann_id`` absent from ``instances.json``.
            AnnotationError: No ``ann_id`` key, a malformed ``ann_id``, or
                a ``no_target`` that contradicts it.
        """
        if 'ann_id' not in ref:
            raise AnnotationError(
                f'{where}: no "ann_id" (the referred annotation id; a list '
                'of ids for several objects, [] / -1 / None for none)')
        ids = target_ids(ref['ann_id'], where)
        check_no_target_flag(ref.get('no_target'), not ids, where)
        anns = []
        for ann_id in ids:
            if ann_id not in self.anns:
                raise KeyError(f'{where}: ann_id={ann_id} is not in '
                               f'{self.instances_file}')
            anns.append(self.anns[ann_id])
        return ids, anns

    def target_categories(self, ref: dict, anns: List[dict]) -> Set[Any]:
        """Categories of the targets (an annotation without one takes the
        ref's ``category_id``; None where neither is known)."""
        return {
            self.ann_category(a)
            if self.ann_category(a) is not None else ref.get('category_id')
            for a in anns
        }

    def target(self, ref: dict, where: str) -> ReferTarget:
        """What ``ref`` refers to, its segmentation checked (not decoded).

        Raises:
            KeyError: An ``ann_id`` absent from ``instances.json``.
            AnnotationError: A malformed ``ann_id`` / ``no_target`` /
                image entry.
            MaskDecodeError: A malformed segmentation, or one beyond
                ``max_mask_pixels`` or off its image entry's size
                (:class:`~rsrefseg_mm.datasets.mask_utils.MaskLimitError`).
        """
        ids, anns = self.targets(ref, where)
        image_id = self.image_id(ref, where, anns)
        seg_size = self.image_size(image_id, where)
        categories = self.target_categories(ref, anns)
        category_id = optional_id(ref.get('category_id'), where, 'category_id')
        if category_id is None and len(categories) == 1:
            category_id = next(iter(categories))
        if not anns:
            return ReferTarget([], image_id, None, seg_size, None, category_id,
                               set())
        if len(anns) == 1:
            segmentation = anns[0].get('segmentation')
        else:
            segmentation = [a.get('segmentation') for a in anns]
        mask_size = self._check_segmentation(ids, segmentation, seg_size,
                                             where)
        return ReferTarget(ids, image_id, segmentation, seg_size, mask_size,
                           category_id, categories)

    def _check_segmentation(self, ids: List[Any], segmentation: Any,
                            seg_size: Optional[Tuple[int, int]],
                            where: str) -> Optional[Tuple[int, int]]:
        """Check once per set of annotations (refs share them)."""
        key = (tuple(ids), seg_size)
        if key not in self._checked:
            try:
                self._checked[key] = (validate_segmentation(
                    segmentation,
                    *(seg_size or (None, None)),
                    max_pixels=self.max_mask_pixels,
                    size_tolerance=self.size_tolerance), None)
            except MaskDecodeError as e:
                self._checked[key] = (None, e)
        size, error = self._checked[key]
        if error is not None:
            raise type(error)(f'{where} ann_id={_ids(ids)}: '
                              f'{mask_error_kind(error)}: {error}')
        return size

    def image_id(self, ref: dict, where: str,
                 anns: Iterable[dict] = ()) -> Any:
        """The ref's ``image_id``, else its first target's (an id or
        None)."""
        image_id = ref.get('image_id')
        if image_id is None:
            image_id = next((a.get('image_id') for a in anns), None)
        return optional_id(image_id, where, 'image_id')

    def image_size(self, image_id: Any,
                   where: str) -> Optional[Tuple[int, int]]:
        """``(height, width)`` of an image entry, None if unstated."""
        image = self.images.get(image_id) if is_id(image_id) else None
        if not image or (image.get('height') is None
                         and image.get('width') is None):
            return None
        h, w = image.get('height'), image.get('width')
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            raise AnnotationError(
                f'{where}: the image entry {image_id!r:.40} of '
                f'{self.instances_file} needs positive int "height" and '
                f'"width", got {h!r:.40}, {w!r:.40}')
        return int(h), int(w)

    def file_name(self, ref: dict, where: str) -> str:
        """The ref's image file name (else its image entry's), checked to
        stay inside the image folder."""
        name = ref.get('file_name')
        if name is None:
            image_id = self.image_id(ref, where)
            image = self.images.get(image_id) if is_id(image_id) else None
            name = (image or {}).get('file_name')
        return image_file_name(name, where)

    def sentences(self, ref: dict, where: str) -> List[Tuple[Any, Any]]:
        """``(sent_id, text)`` of each sentence (``sent``, else ``raw``).

        Raises:
            AnnotationError: ``sentences`` missing, empty, not a list of
                dicts, or a text that is not a string.
        """
        sentences = ref.get('sentences')
        if not sentences:
            raise AnnotationError(f'{where}: no sentences')
        expect(sentences, list, where, '"sentences", a list of dicts')
        out = []
        for i, sent in enumerate(sentences):
            expect(sent, dict, f'{where} sentence #{i}',
                   'a sentence dict with "sent"')
            sent_id = optional_id(
                sent.get('sent_id', i), f'{where} sentence #{i}', 'sent_id')
            text = sent.get('sent', sent.get('raw'))
            if text is not None:
                expect(text, str, f'{where} sent_id={sent_id!r:.40}',
                       '"sent", the expression text')
            out.append((sent_id, text))
        return out

    def image_categories(self) -> Dict[str, Optional[Set[Any]]]:
        """The categories on each image, by image file name.

        Those of every annotation of ``instances.json`` on the image and of
        every ref's targets (all splits). None for an image with an object
        of unknown category. Entries that do not parse are left out (the
        dataset refuses them elsewhere).
        """
        cats: Dict[str, Optional[Set[Any]]] = {}

        def add(name, values):
            if name in cats and cats[name] is None:
                return
            values = set(values)
            cats[name] = None if None in values else \
                cats.get(name, set()) | values

        for ann in self.anns.values():
            image = self.images.get(ann.get('image_id')) \
                if is_id(ann.get('image_id')) else None
            if image and isinstance(image.get('file_name'), str):
                add(image['file_name'], [self.ann_category(ann)])
        for i, ref in enumerate(self.refs):
            try:
                where = self.ref_where(ref, i)
                _, anns = self.targets(self.check_ref(ref, where), where)
                name = self.file_name(ref, where)
            except (KeyError, ValueError):
                continue
            add(name, self.target_categories(ref, anns))
        return cats


def _ids(ids: List[Any]) -> str:
    return str(ids[0]) if len(ids) == 1 else str(ids)


def _is_int(value: Any) -> bool:
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, bool))
