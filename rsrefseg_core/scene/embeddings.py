"""The window encodings of a scene: in memory up to a limit, beyond it in a
file that can be kept and reopened.

The file is a ZIP archive of ``.npy`` arrays (NumPy's ``.npz`` layout, no
pickles): ``<window>/<name>.npy`` per window and, once the scene is
encoded, ``meta.json`` (scene, engine, grid, the arrays' shapes and dtypes,
the windows without data). Reopening checks ``meta.json`` against the
scene and the engine at hand, and every array's header against the shapes
recorded there before reading it, so a file of another scene or model, an
interrupted encoding or a tampered array is refused by name instead of
being decoded.
"""
import json
import os
import os.path as osp
import tempfile
import zipfile
from typing import Dict, Optional, Sequence

import numpy as np

Arrays = Dict[str, np.ndarray]
#: Bytes of window encodings held in memory by default (1 GiB).
DEFAULT_MEMORY_LIMIT = 1 << 30
#: Version of the file layout.
EMBEDDINGS_FORMAT = 1
META = 'meta.json'


class EmbeddingsFileError(ValueError):
    """A window embeddings file that does not belong to the scene / engine,
    is incomplete or damaged."""


def _entry(index: int, name: str) -> str:
    return f'{index:06d}/{name}.npy'


class WindowEmbeddings:
    """Encoded windows of one scene, by window index.

    Args:
        meta (dict): What the encodings belong to (JSON-serialisable:
            ``scene``, ``engine``, ``grid`` ... keys); checked by
            :meth:`open`.
        path (str, optional): A file to write every window to (kept after
            :meth:`close`; :meth:`open` reads it back). None: windows
            beyond ``max_memory`` go to a temporary file deleted on close.
        max_memory (int): Bytes of encodings held in memory.
    """

    def __init__(self,
                 meta: dict,
                 path: Optional[str] = None,
                 max_memory: int = DEFAULT_MEMORY_LIMIT) -> None:
        if isinstance(
                max_memory,
                bool) or not isinstance(max_memory,
                                        (int, np.integer)) or max_memory < 0:
            raise ValueError('max_memory must be a number of bytes >= 0, got '
                             f'{max_memory!r}')
        self.meta = dict(meta, format=EMBEDDINGS_FORMAT, arrays=None, empty=[])
        self.max_memory = int(max_memory)
        self.path, self.keep = path, path is not None
        self.memory: Dict[int, Arrays] = {}
        self.memory_bytes = 0
        self._zip: Optional[zipfile.ZipFile] = None
        self._in_file = set()
        if path is not None:
            self._open_zip(path, 'w')

    # -- writing --------------------------------------------------------
    def _open_zip(self, path: str, mode: str) -> None:
        self._zip = zipfile.ZipFile(
            path, mode, compression=zipfile.ZIP_STORED, allowZip64=True)

    def put(self, index: int, arrays: Optional[Arrays]) -> None:
        """Store window ``index`` (None: a window without data)."""
        if arrays is None:
            self.meta['empty'].append(int(index))
            return
        spec = {k: [list(v.shape), v.dtype.str] for k, v in arrays.items()}
        if self.meta['arrays'] is None:
            self.meta['arrays'] = spec
        elif spec != self.meta['arrays']:
            raise ValueError(f'window {index}: encodings {spec} differ from '
                             f'the first window\'s {self.meta["arrays"]}')
        size = sum(v.nbytes for v in arrays.values())
        in_memory = self.memory_bytes + size <= self.max_memory
        if in_memory:
            self.memory[index] = {
                k: np.ascontiguousarray(v)
                for k, v in arrays.items()
            }
            self.memory_bytes += size
        if self.keep or not in_memory:
            if self._zip is None:  # first window over the limit
                fd, self.path = tempfile.mkstemp(suffix='.npz')
                os.close(fd)
                self._open_zip(self.path, 'w')
            for name, value in arrays.items():
                with self._zip.open(
                        _entry(index, name), 'w', force_zip64=True) as f:
                    np.lib.format.write_array(
                        f, np.ascontiguousarray(value), allow_pickle=False)
            self._in_file.add(index)

    def finish(self) -> None:
        """Record ``meta.json``: the file is complete and can be reopened."""
        if self._zip is not None:
            self._zip.writestr(META, json.dumps(self.meta))
            self._zip.close()
            self._open_zip(self.path, 'r')

    # -- reading --------------------------------------------------------
    def get(self,
            index: int,
            names: Optional[Sequence[str]] = None) -> Optional[Arrays]:
        """The encodings of window ``index`` (only the arrays ``names``,
        when given: a file reads no more); None for a window without
        data."""
        if index in self.meta['empty']:
            return None
        arrays = self.meta['arrays'] or {}
        names = list(arrays) if names is None else list(names)
        unknown = [n for n in names if n not in arrays]
        if unknown:
            raise KeyError(f'window embeddings have no {unknown}; they hold '
                           f'{sorted(arrays)}')
        if index in self.memory:
            return {name: self.memory[index][name] for name in names}
        if index not in self._in_file:
            raise KeyError(f'window {index} was not encoded')
        return {
            name: self._read(_entry(index, name), *arrays[name])
            for name in names
        }

    def _read(self, entry: str, shape, dtype: str) -> np.ndarray:
        with self._zip.open(entry) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise EmbeddingsFileError(
                    f'{self.path}: {entry} has .npy version {version}')
            read_header = np.lib.format.read_array_header_1_0 \
                if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            header = read_header(f, max_header_size=10000)
            if list(header[0]) != list(shape) or \
                    np.dtype(header[2]).str != dtype:
                raise EmbeddingsFileError(
                    f'{self.path}: {entry} holds {header[2]} '
                    f'{tuple(header[0])}, its meta.json says {dtype} '
                    f'{tuple(shape)}')
            data = f.read(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        value = np.frombuffer(data, dtype=dtype)
        if value.size != int(np.prod(shape)):
            raise EmbeddingsFileError(f'{self.path}: {entry} is truncated')
        return value.reshape(shape, order='F' if header[1] else 'C')

    @classmethod
    def open(cls, path: str, expected: dict) -> 'WindowEmbeddings':
        """Reopen a file written with ``path`` set.

        Args:
            path (str): The file.
            expected (dict): Keys of the meta that must match (the scene,
                the engine, the grid, ...).

        Raises:
            FileNotFoundError: No such file.
            EmbeddingsFileError: Not a complete embeddings file, or one of
                another scene, engine or grid (naming the key).
        """
        if not osp.isfile(path):
            raise FileNotFoundError(f'window embeddings file {path} not '
                                    'found')
        try:
            zf = zipfile.ZipFile(path, 'r')
            meta = json.loads(zf.read(META))
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise EmbeddingsFileError(
                f'{path} is not a complete window embeddings file '
                f'({type(e).__name__}: {e}); encode the scene again') from e
        if meta.get('format') != EMBEDDINGS_FORMAT:
            raise EmbeddingsFileError(
                f'{path}: format {meta.get("format")!r}, expected '
                f'{EMBEDDINGS_FORMAT}')
        for key, value in expected.items():
            if json.loads(json.dumps(value)) != meta.get(key):
                raise EmbeddingsFileError(
                    f'{path} holds windows of another {key}: '
                    f'{meta.get(key)!r}, expected {value!r}')
        self = cls.__new__(cls)
        self.meta, self.path, self.keep = meta, path, True
        self.max_memory, self.memory, self.memory_bytes = 0, {}, 0
        self._zip = zf
        names = set(zf.namelist())
        self._in_file = {int(n.split('/')[0]) for n in names if n != META}
        return self

    def close(self) -> None:
        """Close the file; a temporary one is deleted."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if not self.keep and self.path is not None and osp.exists(self.path):
            os.remove(self.path)
        self.memory.clear()
        self.memory_bytes = 0
