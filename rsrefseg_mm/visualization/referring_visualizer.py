"""Visualizer that draws referring masks with labelled panels and caption."""
from typing import List, Optional

import mmcv
import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from rsrefseg_core.visualization.captions import add_caption, label_panel
from rsrefseg_core.visualization.overlays import (FILL_ALPHA, GT_COLOR,
                                                  PRED_COLOR, display_scale,
                                                  draw_mask_overlay, enlarge,
                                                  heatmap_overlay, mask_iou)

__all__ = ['ReferringVisualizer', 'add_caption', 'heatmap_overlay']

#: White gap between panels, in pixels.
PANEL_GAP = 4


def hconcat_panels(panels: List[np.ndarray],
                   gap: int = PANEL_GAP) -> np.ndarray:
    """Place (H_i, W_i, 3) panels side by side, top-aligned, on white."""
    height = max(p.shape[0] for p in panels)
    cols = []
    for i, p in enumerate(panels):
        if p.shape[0] < height:
            pad = np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)
            p = np.concatenate([p, pad], axis=0)
        if i:
            cols.append(np.full((height, gap, 3), 255, np.uint8))
        cols.append(p)
    return np.concatenate(cols, axis=1)


@VISUALIZERS.register_module()
class ReferringVisualizer(SegLocalVisualizer):
    """:class:`SegLocalVisualizer` for referring segmentation.

    Draws the ground truth (left) and the prediction (right) as a
    translucent fill plus a contour, so the object's own colour stays
    visible; each panel is labelled (``ground truth``, ``prediction`` with
    the sample's IoU when the ground truth is known) and the expression
    (``data_sample.text``, any script) is the caption above them. Images
    narrower than 256 px are enlarged by an integer factor so that contours
    and text stay readable.

    Args:
        name (str): Name of the visualizer instance.
        alpha (float): Fill opacity of the masks. Defaults to 0.2.
        **kwargs: Passed to :class:`SegLocalVisualizer`.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 alpha: float = FILL_ALPHA,
                 **kwargs) -> None:
        super().__init__(name=name, alpha=alpha, **kwargs)

    def draw_referring(self,
                       image: np.ndarray,
                       data_sample: Optional[SegDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True) -> np.ndarray:
        """Compose the labelled panels and caption of one sample.

        Args:
            image (np.ndarray): (H, W, 3) uint8 RGB image.
            data_sample (SegDataSample, optional): With ``gt_sem_seg`` and /
                or ``pred_sem_seg`` (1, H, W) and ``text``.
            draw_gt (bool): Draw the ground-truth panel when present.
            draw_pred (bool): Draw the prediction panel when present.

        Returns:
            np.ndarray: (H', W', 3) uint8 RGB image.
        """
        scale = display_scale(image.shape[1])
        img = enlarge(image, scale)

        def mask_of(key: str) -> Optional[np.ndarray]:
            if data_sample is None or key not in data_sample:
                return None
            return data_sample.get(key).data[0].cpu().numpy()

        gt = mask_of('gt_sem_seg') if draw_gt else None
        pred = mask_of('pred_sem_seg') if draw_pred else None
        panels = []
        if gt is not None:
            panels.append(
                label_panel(
                    draw_mask_overlay(img, enlarge(gt, scale), GT_COLOR,
                                      self.alpha), 'ground truth'))
        if pred is not None:
            label = 'prediction'
            if gt is not None:
                label += f' \u00b7 IoU {mask_iou(pred, gt):.2f}'
            panels.append(
                label_panel(
                    draw_mask_overlay(img, enlarge(pred, scale), PRED_COLOR,
                                      self.alpha), label))
        drawn = hconcat_panels(panels) if panels else img
        text = data_sample.get('text') if data_sample is not None else None
        if text is not None:
            drawn = add_caption(drawn, str(text))
        return drawn

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Optional[SegDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       step: int = 0,
                       with_labels: Optional[bool] = False) -> np.ndarray:
        """Draw a referring sample (RGB ``image``) and save it to backends.

        Same arguments as :meth:`SegLocalVisualizer.add_datasample`
        (``with_labels`` is unused: the panels are always labelled); returns
        the drawn RGB image as well.
        """
        drawn = self.draw_referring(image, data_sample, draw_gt, draw_pred)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)
        return drawn
