"""Test-time augmentation for one-channel (referring) segmentors."""
from typing import List

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.utils import SampleList


@MODELS.register_module()
class ReferringTTAModel(BaseTTAModel):
    """Average the foreground probabilities of the augmented views.

    Used by ``tools/test.py --tta`` with a config's ``tta_pipeline``
    (``TestTimeAug`` over scales x ``ReferringRandomFlip``; the flip also
    swaps ``left``/``right`` ... in the expression, so every view asks for
    the same object). Each view's prediction comes back from the wrapped
    segmentor's ``test_step`` already un-flipped and resized to the original
    image (mmseg's ``postprocess_result``), with ``seg_logits`` holding the
    foreground *probability* (mmseg stores the sigmoid for one-channel
    heads). This model averages those probabilities and thresholds the mean
    at ``decode_head.threshold``.

    mmseg's ``SegTTAModel`` cannot be used: for ``out_channels == 1`` it
    applies the sigmoid a second time (``sigmoid(p) > 0.5`` for every
    ``p > 0``: everything becomes foreground), and it keeps the metainfo of
    the last (flipped) view, whose expression is the flipped one.

    Args:
        module (dict | nn.Module): The segmentor (``RSRefSeg``).
        data_preprocessor (dict, optional): Passed to the module's config.
    """

    def merge_preds(self, data_samples_list: List[SampleList]) -> SampleList:
        """Merge the views of every image.

        Args:
            data_samples_list (list[list[SegDataSample]]): Per image, its
                views' predictions (``seg_logits`` (1, H, W) probabilities
                at the original size).

        Returns:
            list[SegDataSample]: Per image the un-augmented view's sample
            (original expression and ground truth) with ``seg_logits`` the
            mean probability (1, H, W) and ``pred_sem_seg`` the mask (1, H,
            W) at the original size.
        """
        if getattr(self.module, 'out_channels', 1) != 1:
            raise ValueError('ReferringTTAModel merges one-channel '
                             '(sigmoid) predictions; use mmseg SegTTAModel '
                             f'for {self.module.out_channels} channels')
        threshold = self.module.decode_head.threshold
        merged = []
        for views in data_samples_list:
            probs = [view.seg_logits.data for view in views]
            shapes = {tuple(p.shape) for p in probs}
            if len(shapes) != 1:
                raise ValueError(f'views of {views[0].get("img_path")} came '
                                 f'back at different sizes {shapes}; every '
                                 'view must be resized to ori_shape')
            mean = torch.stack(probs).mean(0)
            # the un-flipped view carries the original expression
            base = next((v for v in views if not v.metainfo.get('flip')),
                        views[0])
            base.set_data({
                'seg_logits':
                PixelData(data=mean),
                'pred_sem_seg':
                PixelData(data=(mean > threshold).to(mean))
            })
            merged.append(base)
        return merged
