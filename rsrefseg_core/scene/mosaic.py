"""Window probabilities averaged onto the scene grid, a strip at a time."""
from typing import Callable, Optional

import numpy as np

from .grid import Box

#: ``sink(row, probability)``: rows ``row : row + len(probability)`` of the
#: scene are final, (n, W) float32.
StripSink = Callable[[int, np.ndarray], None]


class ProbabilityMosaic:
    """Averages overlapping window probabilities on the scene's grid.

    Windows must come row by row (as :class:`~.grid.SceneGrid` gives
    them): when a window starts below the rows held, those rows are final
    and go to ``sink``, so only ``crop_height`` rows of the scene are ever
    held, whatever its size. A window added as ``None`` (judged not to hold
    the referent, or without data) counts nothing: a pixel that no other
    window covers gets probability 0.

    Args:
        height (int): Scene rows.
        width (int): Scene columns.
        crop_height (int): Most rows one window spans.
        sink (callable): Receives the final rows (:data:`StripSink`).
    """

    def __init__(self, height: int, width: int, crop_height: int,
                 sink: StripSink) -> None:
        self.height, self.width = int(height), int(width)
        rows = min(int(crop_height), self.height)
        self.sum = np.zeros((rows, self.width), np.float32)
        self.count = np.zeros((rows, self.width), np.uint16)
        self.sink = sink
        #: First scene row held in the buffers.
        self.row = 0

    def _flush(self, stop: int) -> None:
        """Send rows ``[row, stop)`` to the sink and shift the buffers."""
        n = stop - self.row
        if n <= 0:
            return
        prob = self.sum[:n] / np.maximum(self.count[:n], 1)
        self.sink(self.row, prob)
        self.sum = np.roll(self.sum, -n, axis=0)
        self.count = np.roll(self.count, -n, axis=0)
        self.sum[-n:] = 0
        self.count[-n:] = 0
        self.row = stop

    def add(self, box: Box, probability: Optional[np.ndarray]) -> None:
        """Add one window.

        Args:
            box (tuple): ``(y1, y2, x1, x2)`` in the scene.
            probability (np.ndarray | None): (y2 - y1, x2 - x1) foreground
                probability, or None for a window that counts nothing.

        Raises:
            ValueError: A window above the rows already written, taller
                than ``crop_height``, or a probability of another shape.
        """
        y1, y2, x1, x2 = box
        if y1 < self.row:
            raise ValueError(f'window {box} starts above row {self.row}, '
                             'which is already written: add windows row by '
                             'row')
        self._flush(y1)
        if y2 - self.row > self.sum.shape[0]:
            raise ValueError(f'window {box} spans more than '
                             f'{self.sum.shape[0]} rows')
        if probability is None:
            return
        if probability.shape != (y2 - y1, x2 - x1):
            raise ValueError(f'window {box}: probability of shape '
                             f'{probability.shape}')
        r1, r2 = y1 - self.row, y2 - self.row
        self.sum[r1:r2, x1:x2] += probability
        self.count[r1:r2, x1:x2] += 1

    def close(self) -> None:
        """Send the remaining rows (the scene is complete)."""
        while self.row < self.height:
            self._flush(min(self.row + self.sum.shape[0], self.height))
