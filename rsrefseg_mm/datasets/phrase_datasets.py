"""RefSegRS and RISBench: phrase-list referring datasets with mask files."""
from typing import List, Optional, Sequence

from mmengine.fileio import join_path
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from rsrefseg_core.text import check_expression
from .annotation_io import (DEFAULT_MAX_ANNOTATION_BYTES, AnnotationLimitError,
                            check_max_bytes, image_file_name,
                            read_annotation_bytes)
from .rrsisd import REFERRING_METAINFO


def first_category(text: str, categories: Sequence[str]) -> Optional[str]:
    """Return the category name that occurs first in ``text`` (or None).

    Neither RefSegRS nor RISBench ships a category per expression; RSRefSeg's
    code derives it this way (case-insensitive substring search, earliest
    occurrence wins, longer names win ties) to report per-category scores.

    Args:
        text (str): Referring expression.
        categories (Sequence[str]): Candidate category names.

    Returns:
        str | None: The earliest category mentioned in ``text``.
    """
    low = text.lower()
    best, best_key = None, None
    for cat in categories:
        pos = low.find(cat.lower())
        if pos < 0:
            continue
        key = (pos, -len(cat))
        if best_key is None or key < best_key:
            best, best_key = cat, key
    return best


class PhraseMaskDataset(BaseSegDataset):
    """Base class for ``output_phrase_{split}.txt`` + mask-file datasets.

    Each non-empty line of the phrase file is ``<image_id> <sentence>`` and
    gives one sample whose image is ``<img_path>/<image_id><img_suffix>`` and
    whose mask is ``<seg_map_path>/<image_id><seg_map_suffix>``. The mask
    file is read by :class:`LoadReferringAnnotations` (``mask_mode='auto'``:
    0/255 masks become 0/1; 0/1/255 masks keep 255 as ignore).

    Metainfo per sample: ``text``; ``image_id`` (the line's first token);
    ``ref_id`` and ``sent_id`` = the 0-based line index of the sample in the
    phrase file (unique within a split; the phrase files carry no ids);
    ``ann_id`` None; ``category`` = the first of :attr:`CATEGORIES` named in
    the expression (see :func:`first_category`) or None.

    The phrase file is read only up to ``max_annotation_bytes`` and may
    hold at most ``max_samples`` lines (a file of 4-byte lines would
    otherwise make millions of samples, gigabytes of data infos); an
    ``image_id`` that would put the image or mask outside its folder
    (absolute, with ``..``) raises
    :class:`~rsrefseg_mm.datasets.annotation_io.ImagePathError`.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        ann_file (str): Phrase file relative to ``data_root``; defaults to
            ``output_phrase_{split}.txt``.
        max_annotation_bytes (int): Largest phrase file read. Defaults to
            256 MiB.
        max_samples (int): Most samples (non-empty lines) of a split.
            Defaults to 200,000 (RISBench, the largest, has ~52k).
        **kwargs: Other :class:`mmseg.datasets.BaseSegDataset` arguments.
    """
    METAINFO = REFERRING_METAINFO
    CATEGORIES: Sequence[str] = ()
    SPLITS = ('train', 'val', 'test')

    def __init__(self,
                 split: str = 'train',
                 ann_file: str = '',
                 max_annotation_bytes: int = DEFAULT_MAX_ANNOTATION_BYTES,
                 max_samples: int = 200_000,
                 **kwargs) -> None:
        if isinstance(
                max_samples,
                bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError('max_samples must be a positive integer, got '
                             f'{max_samples!r}')
        self.max_samples = max_samples
        if split not in self.SPLITS:
            raise ValueError(f'split must be one of {self.SPLITS}, got '
                             f'{split!r}')
        self.max_annotation_bytes = check_max_bytes(max_annotation_bytes)
        self.split = split
        super().__init__(
            ann_file=ann_file or f'output_phrase_{split}.txt', **kwargs)

    def load_data_list(self) -> List[dict]:
        """Parse the phrase file into data infos.

        Returns:
            list[dict]: One data info per line.
        """
        try:
            raw = read_annotation_bytes(self.ann_file, 'phrase file',
                                        self.max_annotation_bytes,
                                        self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'{type(self).__name__}: phrase file {self.ann_file} not '
                'found (expected output_phrase_{train,val,test}.txt in '
                'data_root)') from None
        try:
            lines = raw.decode('utf-8').splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f'{self.ann_file}: not UTF-8 text: {e}')
        count = sum(1 for line in lines if line.strip())
        if count > self.max_samples:
            raise AnnotationLimitError(
                f'{self.ann_file}: {count:,} phrase lines, more than '
                f'max_samples={self.max_samples:,}; raise max_samples if '
                'the split really has that many expressions')
        img_dir = self.data_prefix.get('img_path', '')
        seg_dir = self.data_prefix.get('seg_map_path', '')
        data_list = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            image_id = parts[0]
            idx = len(data_list)
            where = f'{self.ann_file}:{lineno} image_id={image_id:.60}'
            text = check_expression(parts[1] if len(parts) > 1 else '', where)
            data_list.append(
                dict(
                    img_path=join_path(
                        img_dir,
                        image_file_name(image_id + self.img_suffix, where)),
                    seg_map_path=join_path(
                        seg_dir,
                        image_file_name(image_id + self.seg_map_suffix,
                                        where)),
                    mask_source=where,
                    text=text,
                    ref_id=idx,
                    ann_id=None,
                    image_id=image_id,
                    sent_id=idx,
                    category=first_category(text, self.CATEGORIES),
                    label_map=self.label_map,
                    reduce_zero_label=self.reduce_zero_label,
                    seg_fields=[]))
        if not data_list:
            raise ValueError(f'{type(self).__name__}: {self.ann_file} has no '
                             'samples')
        return data_list


@DATASETS.register_module()
class RefSegRSDataset(PhraseMaskDataset):
    """RefSegRS (`LGCE, Yuan et al., TGRS 2024
    <https://arxiv.org/abs/2306.08625>`_).

    Layout of the release (checked against RSRefSeg's converter, which reads
    ``images/<id>.tif`` and ``masks/<id>.tif``)::

        data/refsegrs/
        ├── images/<image_id>.tif
        ├── masks/<image_id>.tif     # binary mask, 0 / 255 (or 0 / 1)
        └── output_phrase_{train,val,test}.txt  # "<image_id> <sentence>"

    Assumptions: ``image_id`` has no extension in the phrase file; masks are
    single-channel (multi-channel masks are reduced with ``max``) and every
    nonzero pixel is the target. Categories (for the per-category table) are
    RefSegRS's 14 classes, found in the expression by
    :func:`first_category`.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        data_prefix (dict): Defaults to
            ``dict(img_path='images', seg_map_path='masks')``.
        img_suffix (str): Defaults to ``'.tif'``.
        seg_map_suffix (str): Defaults to ``'.tif'``.
        **kwargs: See :class:`PhraseMaskDataset`.
    """
    CATEGORIES = ('road', 'vehicle', 'car', 'van', 'building', 'truck',
                  'trailer', 'bus', 'road marking', 'bikeway', 'sidewalk',
                  'tree', 'low vegetation', 'impervious surface')

    def __init__(self,
                 split: str = 'train',
                 data_prefix: dict = dict(
                     img_path='images', seg_map_path='masks'),
                 img_suffix: str = '.tif',
                 seg_map_suffix: str = '.tif',
                 **kwargs) -> None:
        super().__init__(
            split=split,
            data_prefix=data_prefix,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            **kwargs)


@DATASETS.register_module()
class RISBenchDataset(PhraseMaskDataset):
    """RISBench (`Dong et al., 2024 <https://arxiv.org/abs/2410.22372>`_).

    Layout of the release (checked against RSRefSeg2's converter and its
    ``datainfo/risbench_test.jsonl``: phrase-file ids already carry the
    extension, e.g. ``test_0_0.png``, one image and mask file per
    expression)::

        data/risbench/
        ├── img_rgb/<image_id>       # e.g. test_0_0.png (512 x 512)
        ├── mask/<image_id>          # binary mask, 0 / 255 (or 0 / 1)
        └── output_phrase_{train,val,test}.txt  # "<image_id> <sentence>"

    Hence ``img_suffix`` and ``seg_map_suffix`` default to ``''``. Categories
    are RISBench's 26 classes, found in the expression by
    :func:`first_category`.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        data_prefix (dict): Defaults to
            ``dict(img_path='img_rgb', seg_map_path='mask')``.
        img_suffix (str): Defaults to ``''``.
        seg_map_suffix (str): Defaults to ``''``.
        **kwargs: See :class:`PhraseMaskDataset`.
    """
    CATEGORIES = ('expressway service area', 'expressway toll station',
                  'ground track field', 'basketball court', 'container crane',
                  'roundabout', 'windmill', 'overpass', 'stadium', 'bridge',
                  'soccer ball field', 'baseball diamond', 'train station',
                  'golf field', 'airport', 'harbor', 'dam', 'ship', 'helipad',
                  'vehicle', 'chimney', 'airplane', 'helicopter',
                  'tennis court', 'storage tank', 'swimming pool')

    def __init__(self,
                 split: str = 'train',
                 data_prefix: dict = dict(
                     img_path='img_rgb', seg_map_path='mask'),
                 img_suffix: str = '',
                 seg_map_suffix: str = '',
                 **kwargs) -> None:
        super().__init__(
            split=split,
            data_prefix=data_prefix,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            **kwargs)


__all__ = [
    'PhraseMaskDataset', 'RefSegRSDataset', 'RISBenchDataset', 'first_category'
]
