"""Mask and activation overlays that keep the object's own colour visible.

A mask is drawn as a translucent fill plus a crisp contour (a coloured line
on a dark outline, so it stands out on bright and dark ground alike), not as
an opaque tint that replaces the object's colour.
"""
import math
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

#: RGB colours of the ground-truth and predicted masks.
GT_COLOR: Tuple[int, int, int] = (0, 225, 255)
PRED_COLOR: Tuple[int, int, int] = (255, 50, 200)
#: Default fill opacity (the contour is opaque).
FILL_ALPHA = 0.2
#: Images narrower than this are enlarged (integer factor, nearest) so that
#: contours and captions stay readable.
MIN_DISPLAY_WIDTH = 256


def display_scale(width: int, min_width: int = MIN_DISPLAY_WIDTH) -> int:
    """Integer enlargement factor for an image ``width`` pixels wide."""
    return max(1, math.ceil(min_width / max(width, 1)))


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer ``factor``."""
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def contour_thickness(height: int, width: int) -> int:
    """Contour line width (px) for an image of this size."""
    return max(1, round(min(height, width) / 200))


def draw_mask_overlay(image: np.ndarray,
                      mask: np.ndarray,
                      color: Sequence[int] = PRED_COLOR,
                      alpha: float = FILL_ALPHA,
                      ignore_index: int = 255,
                      thickness: Optional[int] = None) -> np.ndarray:
    """Draw a binary mask as a translucent fill and a contour.

    Args:
        image (np.ndarray): (H, W, 3) uint8 image (channel order of
            ``color``).
        mask (np.ndarray): (h, w) mask, 1 / nonzero = target; resized to
            (H, W) with nearest interpolation when sizes differ.
            ``ignore_index`` pixels are dimmed, not filled.
        color (Sequence[int]): Fill and contour colour.
        alpha (float): Fill opacity in [0, 1].
        ignore_index (int): Ignored label.
        thickness (int, optional): Contour width; by default
            :func:`contour_thickness`.

    Returns:
        np.ndarray: (H, W, 3) uint8 image; the input is not modified.
    """
    img = np.ascontiguousarray(image).astype(np.uint8)
    h, w = img.shape[:2]
    mask = np.asarray(mask)
    if mask.shape != (h, w):
        mask = cv2.resize(
            mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    ignore = mask == ignore_index
    fg = (mask > 0) & ~ignore
    out = img.astype(np.float32)
    col = np.array(color, np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * col
    out[ignore] = 0.5 * out[ignore] + 64
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    t = thickness or contour_thickness(h, w)
    contours, _ = cv2.findContours(
        fg.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 0, 0), t + 2, cv2.LINE_8)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), t,
                     cv2.LINE_8)
    return out


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
    act = cv2.resize(
        act_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    act = np.clip(act * 255, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(act, cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(
        np.ascontiguousarray(image), 1 - alpha, heat, alpha, 0)


def mask_iou(pred: np.ndarray,
             gt: np.ndarray,
             ignore_index: int = 255) -> float:
    """IoU of a predicted and a ground-truth mask (ignore pixels excluded;
    1.0 when both are empty, as ``ReferringIoUMetric``'s default)."""
    valid = gt != ignore_index
    p, g = (pred > 0) & valid, (gt == 1) & valid
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)
