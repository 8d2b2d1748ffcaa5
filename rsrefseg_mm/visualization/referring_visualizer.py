"""Visualizer that draws referring masks with their expression as caption."""
import textwrap
from typing import Optional

import cv2
import mmcv
import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

CAPTION_FONT = cv2.FONT_HERSHEY_SIMPLEX


def add_caption(image: np.ndarray, text: str) -> np.ndarray:
    """Put ``text`` in a white band above ``image``, wrapped to its width.

    Args:
        image (np.ndarray): (H, W, 3) uint8 image (any channel order).
        text (str): The caption (e.g. the referring expression).

    Returns:
        np.ndarray: (H + band, W, 3) uint8 image.
    """
    h, w = image.shape[:2]
    scale = max(0.35, min(w, 1024) / 900)
    thickness = 1 if scale < 0.8 else 2
    (cw, ch), base = cv2.getTextSize('x', CAPTION_FONT, scale, thickness)
    chars_per_line = max(8, int(w / cw) - 2)
    lines = textwrap.wrap(text, chars_per_line) or ['']
    line_h = ch + base + 6
    band = np.full((line_h * len(lines) + 6, w, 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, 4 + ch + i * line_h), CAPTION_FONT, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def heatmap_overlay(image: np.ndarray,
                    act_map: np.ndarray,
                    alpha: float = 0.5) -> np.ndarray:
    """Blend an activation map in [0, 1] over an RGB image as a JET heat map.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB image.
        act_map (np.ndarray): (h, w) float map in [0, 1], resized to (H, W).
        alpha (float): Weight of the heat map.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB image.
    """
    h, w = image.shape[:2]
    act = cv2.resize(act_map.astype(np.float32), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    act = np.clip(act * 255, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(act, cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


@VISUALIZERS.register_module()
class ReferringVisualizer(SegLocalVisualizer):
    """:class:`SegLocalVisualizer` for referring segmentation.

    Draws ground truth (left) and prediction (right) overlays like mmseg,
    without class-name labels, and puts the sample's expression
    (``data_sample.text``) as a caption above them.

    Args:
        name (str): Name of the visualizer instance.
        alpha (float): Mask opacity. Defaults to 0.5.
        **kwargs: Passed to :class:`SegLocalVisualizer`.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 alpha: float = 0.5,
                 **kwargs) -> None:
        super().__init__(name=name, alpha=alpha, **kwargs)

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

        Same arguments as :meth:`SegLocalVisualizer.add_datasample`; returns
        the drawn RGB image as well.
        """
        if not self.dataset_meta:
            self.set_dataset_meta(
                classes=('background', 'target'),
                palette=[[0, 0, 0], [255, 64, 64]])
        panels = []
        if data_sample is not None:
            for key, flag in (('gt_sem_seg', draw_gt),
                              ('pred_sem_seg', draw_pred)):
                if flag and key in data_sample:
                    panels.append(
                        self._draw_sem_seg(image, data_sample.get(key),
                                           self.dataset_meta['classes'],
                                           self.dataset_meta['palette'],
                                           with_labels))
        drawn = np.concatenate(panels, axis=1) if panels else image
        text = data_sample.get('text') if data_sample is not None else None
        if text is not None:
            drawn = add_caption(drawn, str(text))
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)
        return drawn
