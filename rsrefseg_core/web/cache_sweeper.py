"""Removal of the empty entries that Gradio's file cache leaves behind."""
import errno
import os
import time
from typing import Callable


class CacheSweeper:
    """Removes the empty folders and empty files directly under ``root``
    once they are more than ``max_age`` seconds old.

    Gradio's ``delete_cache`` deletes the files it cached once they are that
    old, but not the folder each one was cached in, and ``gr.File`` leaves
    an empty temporary file in its cache per request: a server that runs for
    weeks would gather them. Files that hold data are left alone (they are
    Gradio's to delete), and so is anything that is not a plain file or
    folder, or is younger than ``max_age``.

    Args:
        root (str): The cache folder (Gradio's ``GRADIO_TEMP_DIR``).
        max_age (float): Age in seconds (by modification time) from which an
            empty entry goes, > 0.
        clock (Callable[[], float]): The current time in seconds since the
            epoch, as file modification times are. Defaults to
            :func:`time.time`.

    Raises:
        ValueError: For ``max_age <= 0``.
    """

    def __init__(self,
                 root: str,
                 max_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        if not max_age > 0:
            raise ValueError(f'max_age must be > 0 seconds, got {max_age!r}')
        self.root = root
        self.max_age = max_age
        self.clock = clock

    def sweep(self) -> int:
        """Remove the empty entries older than ``max_age``, once.

        An entry that is removed, filled or refilled meanwhile (Gradio
        works in the folder at the same time) is skipped.

        Returns:
            int: Entries removed.

        Raises:
            OSError: When ``root`` cannot be listed, or an old empty entry
                cannot be removed for another reason than the above.
        """
        removed = 0
        now = self.clock()
        with os.scandir(self.root) as entries:
            for entry in entries:
                try:
                    removed += self._remove_if_old_and_empty(entry, now)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
        return removed

    def _remove_if_old_and_empty(self, entry: os.DirEntry, now: float) -> int:
        info = entry.stat(follow_symlinks=False)
        if now - info.st_mtime <= self.max_age:
            return 0
        if entry.is_dir(follow_symlinks=False):
            os.rmdir(entry.path)  # refused unless empty
            return 1
        if entry.is_file(follow_symlinks=False) and info.st_size == 0:
            os.remove(entry.path)
            return 1
        return 0
