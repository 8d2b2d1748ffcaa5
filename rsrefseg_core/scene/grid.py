"""Where the windows of a scene lie.

Windows are placed as MMSegmentation's slide inference places them: every
``stride`` pixels from the top-left corner, the last window of a row or
column moved back to end at the border, none larger than the image. The
PyTorch segmentor's ``test_cfg.mode='slide'`` and the scene predictor of
both runtimes use this one grid.
"""
from typing import Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

#: A window ``(y1, y2, x1, x2)`` in the scene's pixels (end exclusive).
Box = Tuple[int, int, int, int]


def pair(value, name: str) -> Tuple[int, int]:
    """``value`` (an int or an ``(h, w)`` pair) as two positive ints.

    Raises:
        ValueError: For anything else (naming ``name``).
    """
    values = (value, value) if isinstance(value, (int, np.integer)) else \
        tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(values) != 2 or any(
            isinstance(v, bool) or not isinstance(v,
                                                  (int, np.integer)) or v < 1
            for v in values):
        raise ValueError(f'{name} must be a positive integer or a pair of '
                         f'them (h, w), got {value!r}')
    return int(values[0]), int(values[1])


def check_window_args(crop_size, stride) -> Tuple[Tuple[int, int], ...]:
    """``crop_size`` and ``stride`` as ``(h, w)`` pairs, the stride no
    larger than the window (gaps would leave pixels unseen).

    Returns:
        tuple: ``(crop_size, stride)``.

    Raises:
        ValueError: Non-positive sizes, or a stride above the window.
    """
    crop, step = pair(crop_size, 'crop_size'), pair(stride, 'stride')
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f'stride {step} leaves gaps between windows of '
                         f'crop_size {crop}')
    return crop, step


def window_boxes(height: int, width: int, crop_size: Sequence[int],
                 stride: Sequence[int]) -> List[Box]:
    """Windows ``(y1, y2, x1, x2)`` covering a ``height`` x ``width``
    image, row by row (see the module docstring)."""
    (h_crop, w_crop), (h_stride, w_stride) = crop_size, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


class SceneGrid(NamedTuple):
    """The windows of a ``height`` x ``width`` scene.

    Attributes:
        height (int): Scene rows.
        width (int): Scene columns.
        crop_size (tuple[int, int]): Window ``(h, w)`` (clipped to the
            scene in :attr:`boxes`).
        stride (tuple[int, int]): Step ``(h, w)`` between windows.
    """
    height: int
    width: int
    crop_size: Tuple[int, int]
    stride: Tuple[int, int]

    @classmethod
    def build(cls,
              height: int,
              width: int,
              crop_size,
              stride=None) -> 'SceneGrid':
        """A checked grid; ``stride`` defaults to 3/4 of the window (a
        quarter overlap)."""
        crop = pair(crop_size, 'crop_size')
        if stride is None:
            stride = tuple(max(1, c * 3 // 4) for c in crop)
        crop, stride = check_window_args(crop, stride)
        return cls(int(height), int(width), crop, stride)

    @property
    def boxes(self) -> List[Box]:
        """Every window, row by row."""
        return window_boxes(self.height, self.width, self.crop_size,
                            self.stride)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(rows, columns)`` of windows."""
        boxes = self.boxes
        cols = sum(1 for b in boxes if b[0] == boxes[0][0])
        return len(boxes) // cols, cols

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def batches(self, size: int) -> Iterator[List[Tuple[int, Box]]]:
        """``(index, box)`` of consecutive windows, ``size`` at a time."""
        indexed = list(enumerate(self.boxes))
        for start in range(0, len(indexed), size):
            yield indexed[start:start + size]

    def cell_presence(self, presence: np.ndarray) -> np.ndarray:
        """A coarse raster of where the referent is: one cell per
        ``stride`` x ``stride`` block of the scene, the highest presence of
        the windows that cover the cell's centre.

        Args:
            presence (np.ndarray): (num_windows,) probability per window
                (NaN for a window without data).

        Returns:
            np.ndarray: (ceil(H / sh), ceil(W / sw)) float32, NaN where no
            window with data covers the cell.
        """
        sh, sw = self.stride
        rows, cols = -(-self.height // sh), -(-self.width // sw)
        cy = np.minimum(np.arange(rows) * sh + sh / 2, self.height - 0.5)
        cx = np.minimum(np.arange(cols) * sw + sw / 2, self.width - 0.5)
        out = np.full((rows, cols), np.nan, np.float32)
        for (y1, y2, x1, x2), p in zip(self.boxes, presence):
            if np.isnan(p):
                continue
            r = (cy >= y1) & (cy < y2)
            c = (cx >= x1) & (cx < x2)
            block = out[np.ix_(r, c)]
            out[np.ix_(r, c)] = np.fmax(block, p)
        return out
