"""A folder of its own per request, the last ``keep`` kept."""
import os
import os.path as osp
import secrets
import shutil
import threading
from collections import deque

#: Random bytes of a folder name (``secrets.token_urlsafe``: 22 characters).
NAME_BYTES = 16


class ResultFolders:
    """A new folder under ``root`` per request; the last ``keep`` are kept.

    The names are random (:func:`secrets.token_urlsafe`), not counted: the
    server may hand out files from under ``root``, and a name one request
    gets says nothing of another's. Folders found in ``root`` (an earlier
    run with the same folder) count as the oldest, in the order of their
    modification times, and go first.

    Args:
        root (str): Parent folder (created when missing).
        keep (int): Folders kept, >= 1.

    Raises:
        ValueError: For ``keep < 1``.
    """

    def __init__(self, root: str, keep: int) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f'keep must be an integer >= 1, got {keep!r}')
        self.root = root
        self.keep = keep
        self.lock = threading.Lock()
        os.makedirs(root, exist_ok=True)
        with os.scandir(root) as entries:
            earlier = [
                e.path for e in entries if e.is_dir(follow_symlinks=False)
            ]
        earlier.sort(key=osp.getmtime)
        self.folders = deque(earlier)

    def new(self) -> str:
        """Create a folder and delete the oldest beyond ``keep``.

        Returns:
            str: The new folder, ``<root>/<random name>``.
        """
        with self.lock:
            while True:  # a collision of 128 random bits is theoretical
                path = osp.join(self.root, secrets.token_urlsafe(NAME_BYTES))
                try:
                    os.mkdir(path)
                    break
                except FileExistsError:
                    continue
            self.folders.append(path)
            while len(self.folders) > self.keep:
                shutil.rmtree(self.folders.popleft(), ignore_errors=True)
        return path
