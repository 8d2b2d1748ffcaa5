from .annotation_io import (AnnotationError, AnnotationLimitError,
                            ImagePathError)
from .mask_utils import (MaskDecodeError, MaskLimitError, binarize_mask_file,
                         decode_segmentation, encode_mask,
                         rle_string_to_counts, validate_segmentation)
from .phrase_datasets import (PhraseMaskDataset, RefSegRSDataset,
                              RISBenchDataset, first_category)
from .rrsisd import REFERRING_METAINFO, RRSISDDataset
from .synthetic import SyntheticReferringDataset
from .synthetic_scene_windows import SyntheticSceneWindowDataset
from .transforms import (LoadReferringAnnotations, LoadReferringImageFromFile,
                         PackReferringInputs, ReferringRandomFlip,
                         flip_referring_text)

__all__ = [
    'RRSISDDataset', 'RefSegRSDataset', 'RISBenchDataset', 'PhraseMaskDataset',
    'SyntheticReferringDataset', 'SyntheticSceneWindowDataset',
    'REFERRING_METAINFO', 'LoadReferringAnnotations', 'PackReferringInputs',
    'decode_segmentation', 'encode_mask', 'validate_segmentation',
    'binarize_mask_file', 'rle_string_to_counts', 'first_category',
    'ReferringRandomFlip', 'flip_referring_text', 'LoadReferringImageFromFile',
    'AnnotationError', 'AnnotationLimitError', 'ImagePathError',
    'MaskDecodeError', 'MaskLimitError'
]
