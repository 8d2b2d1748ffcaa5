"""Visualization hook that also works for in-memory (synthetic) samples."""
import os.path as osp
from typing import Sequence

import mmcv
import numpy as np
import torch
from mmengine import fileio
from mmengine.runner import Runner
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample

from rsrefseg_core.geo import is_8bit_photo


@HOOKS.register_module()
class ReferringVisualizationHook(SegVisualizationHook):
    """Draw validation/test predictions with their expression.

    Like :class:`SegVisualizationHook`, but samples without an image file
    (``SyntheticReferringDataset``) are drawn from the packed input tensor,
    resized back to ``ori_shape`` (so are GeoTIFFs and other non-8-bit
    rasters, as the loader stretched them); window names carry the sample's
    ref/sent ids so that several expressions of one image do not overwrite
    each other. Under test-time augmentation (``tools/test.py --tta``) the
    un-flipped view of such a sample is drawn.
    """

    @staticmethod
    def _packed_input(data_batch: dict, index: int) -> torch.Tensor:
        """Packed image ``index`` of a batch, (3, h, w).

        A TTA batch holds one list of images per view
        (``data_batch['inputs'][view][index]``); the first un-flipped view is
        used.
        """
        inputs = data_batch['inputs']
        if not isinstance(inputs[0], (list, tuple)):
            return inputs[index]
        samples = data_batch['data_samples']
        view = next((v for v, views in enumerate(samples)
                     if not views[index].metainfo.get('flip')), 0)
        return inputs[view][index]

    def _after_iter(self,
                    runner: Runner,
                    batch_idx: int,
                    data_batch: dict,
                    outputs: Sequence[SegDataSample],
                    mode: str = 'val') -> None:
        if self.draw is False or mode == 'train':
            return
        if not self.every_n_inner_iters(batch_idx, self.interval):
            return
        for i, output in enumerate(outputs):
            img_path = output.get('img_path')
            img = None
            if img_path is not None:
                img_bytes = fileio.get(
                    img_path, backend_args=self.backend_args)
                stem = osp.splitext(osp.basename(img_path))[0]
                if is_8bit_photo(img_bytes[:32]):
                    img = mmcv.imfrombytes(img_bytes, channel_order='rgb')
            else:
                stem = f'image{output.get("image_id", batch_idx)}'
            if img is None:
                # packed input: (3, h, w) BGR, as the loader gives (also for
                # GeoTIFFs, whose bands were selected and stretched)
                img = self._packed_input(data_batch, i)
                img = img.permute(1, 2, 0).cpu().numpy()
                img = np.ascontiguousarray(img[..., ::-1]).astype(np.uint8)
                oh, ow = output.ori_shape[:2]
                img = mmcv.imresize(img, (ow, oh))
            ids = [
                str(output.get(k)) for k in ('ref_id', 'sent_id')
                if output.get(k) is not None
            ]
            window_name = '_'.join([f'{mode}_{stem}'] + ids)
            self._visualizer.add_datasample(
                window_name,
                img,
                data_sample=output,
                show=self.show,
                wait_time=self.wait_time,
                step=runner.iter)
