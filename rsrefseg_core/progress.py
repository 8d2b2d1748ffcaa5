"""Progress bars for long loops (dataset checks, browsing, batch demos).

Built on ``rich`` (an mmengine dependency, in requirements/deploy.txt for
the ONNX Runtime predictor): description, bar, done / total,
rate, elapsed time and ETA, drawn on stderr so that stdout stays clean for
results. Quiet when stderr is not a terminal (logs, CI, pipes).
"""
import sys
from typing import IO, Iterable, Iterator, Optional, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                           ProgressColumn, Task, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

T = TypeVar('T')


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than 1/s)."""

    def __init__(self, unit: str = 'it') -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f'? {self.unit}/s')
        if speed >= 1:
            return Text(f'{speed:.1f} {self.unit}/s')
        return Text(f'{1 / speed:.1f} s/{self.unit}')


def track(iterable: Iterable[T],
          description: str = '',
          total: Optional[int] = None,
          unit: str = 'it',
          file: Optional[IO] = None,
          force: Optional[bool] = None) -> Iterator[T]:
    """Iterate over ``iterable`` with a progress bar.

    Args:
        iterable (Iterable): Items.
        description (str): Text before the bar.
        total (int, optional): Number of items (defaults to ``len``).
        unit (str): Unit of the rate column. Defaults to ``'it'``.
        file (IO, optional): Stream to draw on. Defaults to ``sys.stderr``.
        force (bool, optional): True draws even when ``file`` is not a
            terminal, False never draws; None (default) draws on terminals
            only.

    Yields:
        The items of ``iterable``.
    """
    file = sys.stderr if file is None else file
    show = force if force is not None else bool(
        getattr(file, 'isatty', lambda: False)())
    if not show:
        yield from iterable
        return
    if total is None and hasattr(iterable, '__len__'):
        total = len(iterable)  # type: ignore[arg-type]
    console = Console(file=file, force_terminal=True)
    columns = (TextColumn('{task.description}'), BarColumn(),
               MofNCompleteColumn(), RateColumn(unit), TimeElapsedColumn(),
               TextColumn('ETA'), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
