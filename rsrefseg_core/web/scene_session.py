"""The last uploaded scene of a web server, segmented at the file's
resolution (sliding windows): its window embeddings stay in memory (up to
a limit, beyond in a temporary file) so a follow-up expression on the same
upload runs the decoders only.

The upload is read through an :class:`~.upload_guard.UploadGuard`: its
private copy is kept while the scene is (its windows are read again for the
nodata of every answer) and every read runs with GDAL's safe options. A
scene of more windows than the server allows is refused before any window
is read, so the cost of a request stays bounded by its inputs.
"""
import hashlib
import warnings
from typing import Optional, Sequence, Tuple

from ..geo.reader import require_rasterio
from ..scene import (DEFAULT_MEMORY_LIMIT, SceneGrid, ScenePredictor,
                     SceneRuntime)
from ..scene.cli import SceneAnswer, encode_summary, predict_scene
from .upload_guard import UploadGuard

#: Windows of the largest scene segmented by default.
MAX_SCENE_WINDOWS = 400
#: Bytes hashed at a time to recognise an upload seen before.
HASH_CHUNK = 1 << 20


def file_digest(path: str) -> str:
    """sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


class SceneSession:
    """One scene at a time, kept for follow-up expressions.

    Not thread-safe: the caller answers one request at a time.

    Args:
        runtime (SceneRuntime): A ``ReferringPredictor`` or an
            ``OnnxReferringPredictor``.
        guard (UploadGuard): Reads the uploads.
        max_memory (int): Bytes of window embeddings kept in memory
            (:class:`~rsrefseg_core.scene.ScenePredictor`).
        max_windows (int): Larger scenes are refused.
        window_batch (int): Windows encoded together.
    """

    def __init__(self,
                 runtime: SceneRuntime,
                 guard: UploadGuard,
                 max_memory: int = DEFAULT_MEMORY_LIMIT,
                 max_windows: int = MAX_SCENE_WINDOWS,
                 window_batch: int = 4) -> None:
        if isinstance(
                max_windows,
                bool) or not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(f'max_windows must be an integer >= 1, got '
                             f'{max_windows!r}')
        self.scene = ScenePredictor(
            runtime,
            window_batch=window_batch,
            max_memory=max_memory,
            progress=False)
        self.guard = guard
        self.max_windows = max_windows
        #: ``(content digest, bands)`` of the scene held, else None.
        self.key: Optional[Tuple[str, Optional[Tuple[int, ...]]]] = None
        #: The private copy of the upload held, else None.
        self.copy: Optional[str] = None
        #: Private copy of the upload being read, for error messages.
        self.reading: Optional[str] = None
        self.name = ''

    def _check_size(self, copy: str, name: str) -> None:
        rasterio = require_rasterio(name)
        from rasterio.errors import NotGeoreferencedWarning
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(copy) as src:
                height, width = src.height, src.width
        grid = SceneGrid.build(height, width, self.scene.crop_size,
                               self.scene.stride)
        if len(grid) > self.max_windows:
            (ch, cw) = grid.crop_size
            raise ValueError(
                f'{name} is {width} x {height} px: {len(grid)} windows of '
                f'{cw} x {ch} px, more than the {self.max_windows} this '
                'server segments as a whole scene; upload a smaller part '
                'of it')

    def open(self,
             path: str,
             name: str,
             bands: Optional[Sequence[int]] = None) -> Optional[str]:
        """Make the upload the scene, encoding its windows unless it is
        the scene already held (same content and bands).

        Args:
            path (str): The upload.
            name (str): Its name in messages and output files.
            bands (Sequence[int], optional): 1-based bands shown as R, G, B.

        Returns:
            str | None: A line on the windows and their encoding
            (:func:`~rsrefseg_core.scene.cli.encode_summary`); None when
            the scene was held already.

        Raises:
            ValueError: A refused upload (:class:`UploadGuard`), bad bands,
                a scene of more than ``max_windows`` windows.
            OSError: A file that cannot be read.
        """
        self.guard.check_format(path, name)
        key = (file_digest(path), None if bands is None else tuple(bands))
        if key == self.key:
            return None
        self.close()
        copy = self.reading = self.guard.copy(path, name)
        try:
            with self.guard.safe_env(name):
                self._check_size(copy, name)
                self.scene.set_scene(copy, bands, name=name)
        except BaseException:
            self.scene.close()
            self.guard.release(copy)
            raise
        self.copy, self.key, self.name = copy, key, name
        return encode_summary(self.scene, reopened=False)

    def answer(self,
               text: str,
               out_dir: str,
               stem: Optional[str] = None) -> SceneAnswer:
        """One expression on the scene held, its files in ``out_dir``.

        Returns:
            SceneAnswer: The result, the overview PNG and the polygons.
        """
        if self.copy is None:
            raise RuntimeError('SceneSession.answer: open() a scene first')
        with self.guard.safe_env(self.name):
            bands = self.key[1]
            return predict_scene(self.scene, self.copy, [text], out_dir, stem,
                                 bands)[0]

    def close(self) -> None:
        """Drop the scene: its embeddings and the private copy."""
        self.scene.close()
        if self.copy is not None:
            self.guard.release(self.copy)
        self.copy, self.key, self.name = None, None, ''
