"""Packing of referring-segmentation samples."""
from typing import Sequence

from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

#: mmseg's default ``PackSegInputs`` meta keys.
SEG_META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                 'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                 'reduce_zero_label')
#: Per-expression keys every referring sample carries.
REFERRING_META_KEYS = ('text', 'ref_id', 'ann_id', 'image_id', 'sent_id',
                       'category')
#: Raster keys ``LoadReferringImageFromFile`` / the inference API add when
#: they apply (nodata, georeference, region of interest, stretch ranges).
RASTER_META_KEYS = ('nodata_mask', 'geo_transform', 'crs', 'roi_window',
                    'stretch_ranges')


@TRANSFORMS.register_module()
class PackReferringInputs(PackSegInputs):
    """Pack a referring sample: image tensor + ``SegDataSample``.

    Same as mmseg's :class:`PackSegInputs` (``inputs`` (3, H, W) uint8 tensor,
    ``gt_sem_seg`` (1, H, W) int64) but its default ``meta_keys`` add the
    expression and its ids, so ``data_sample.metainfo['text']`` reaches the
    model and ``ref_id`` / ``sent_id`` / ``category`` reach the metric, and
    the raster keys (``nodata_mask`` reaches the segmentor, which keeps
    nodata pixels out of the prediction; ``geo_transform`` / ``crs`` reach
    the outputs).

    Args:
        meta_keys (Sequence[str]): Keys copied into the sample's metainfo
            when present. Defaults to mmseg's keys + ``('text', 'ref_id',
            'ann_id', 'image_id', 'sent_id', 'category')`` +
            :data:`RASTER_META_KEYS`.
    """

    def __init__(
        self,
        meta_keys: Sequence[str] = SEG_META_KEYS + REFERRING_META_KEYS +
        RASTER_META_KEYS
    ) -> None:
        super().__init__(meta_keys=tuple(meta_keys))

    def transform(self, results: dict) -> dict:
        """Pack ``results``; the expression is required.

        Args:
            results (dict): Result dict of the pipeline.

        Returns:
            dict: ``inputs`` and ``data_samples``.
        """
        if 'text' in self.meta_keys and not results.get('text'):
            raise KeyError('PackReferringInputs: sample has no referring '
                           f'expression (`text`): img_path='
                           f'{results.get("img_path")}, ref_id='
                           f'{results.get("ref_id")}')
        return super().transform(results)
