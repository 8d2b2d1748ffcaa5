"""Safe checkpoint loading: ``weights_only=True`` plus an explicit allow-list,
local files only.

Unpickling a ``.pth`` file can run arbitrary code; torch's ``weights_only``
unpickler only rebuilds tensors, containers and the globals it is told are
safe. The checkpoints mmengine's runner saves hold a few other objects,
allowed here by :func:`runner_safe_globals`:

* ``mmengine.logging.HistoryBuffer`` (the message hub's logged scalars) and a
  restricted ``getattr`` that only resolves its built-in statistics methods
  (``min``, ``max``, ``current``, ``mean``), which the buffer pickles;
* numpy arrays, numeric scalars and numeric dtypes (``eta`` and the buffers'
  histories), under numpy 2's and numpy 1's module names.

Every file goes through :func:`safe_torch_load`, which passes
``weights_only`` to ``torch.load`` explicitly: importing ``rsrefseg_mm``
registers it as mmengine's ``CheckpointLoader`` loader for local paths
(prefix ``''``), so ``load_from``, ``resume``, ``tools/test.py``, a
``Pretrained`` ``init_cfg``, :func:`mmseg.apis.init_model` and
:func:`~rsrefseg_mm.apis.init_referring_model` all use it, as do the
CLIP / SigLIP / SAM weight-file readers. A pickle that needs any other
global (e.g. ``os.system`` in a crafted file) raises
:class:`UnsafeCheckpointError` naming the file and the refused globals,
before any of its code runs. The remote schemes mmengine registers
(``http://``, ``https://``, ``s3://``, ``pavi://``, ``open-mmlab://``, ...)
are replaced by :func:`load_from_remote_refused`: their loaders unpickle
the download with ``weights_only=False``, so a URL raises
:class:`RemoteCheckpointError` before anything is fetched.

Before ``torch.load`` runs, :mod:`~rsrefseg_mm.utils.checkpoint_limits`
refuses a file that claims more memory than its size allows
(:class:`~rsrefseg_mm.utils.checkpoint_limits.CheckpointLimitError`: zip
records unpacking to more than ``max_checkpoint_expansion`` times the file,
a pickle whose calls would build gigabytes); after it, a checkpoint that
carries ``meta['state_dict_sha256']`` (:mod:`~rsrefseg_mm.utils.
checkpoint_hash`; every checkpoint this project writes) must still match
it (:class:`ChangedCheckpointError`), and a file without one loads with a
warning logged once per file.

For a file you trust, opt in with :func:`allow_unsafe_load`
(``--unsafe-load`` of ``tools/train.py``, ``tools/test.py`` and the demos):
the loads that the same thread (or asyncio task) runs inside the block use
``weights_only=False`` (and skip the pickle's size check) and log a
warning; loads of other threads stay safe.
"""
import logging
import os
import os.path as osp
import pickle
import tarfile
import threading
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from typing import (Any, Callable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

from .checkpoint_hash import (HASH_KEY, UnhashableTensorError,
                              state_dict_sha256, stored_state_dict_hash)
from .checkpoint_limits import (CheckpointLimitError, MalformedPickleError,
                                check_checkpoint_size, check_max_expansion,
                                legacy_magic, storage_keys)

#: HistoryBuffer statistics the restricted ``getattr`` may resolve.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
#: numpy dtypes a checkpoint may hold (no object / void / string dtypes).
NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                'uint32', 'uint64', 'float16', 'float32', 'float64',
                'longdouble', 'complex64', 'complex128')
#: The remote prefixes of mmengine 0.10's ``CheckpointLoader`` (regular
#: expressions, as it matches them), all refused.
REMOTE_PREFIXES = ('http://', 'https://', 'pavi://', r'(\S+\:)?s3://',
                   r'(\S+\:)?petrel://', 'modelzoo://', 'torchvision://',
                   'open-mmlab://', 'openmmlab://', 'mmcls://')
#: The tools and demos that take ``--unsafe-load`` (for messages).
UNSAFE_LOAD_TOOLS = ('tools/train.py, tools/test.py, demo/image_demo.py, '
                     'demo/web_demo.py')

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_unsafe_load: ContextVar[bool] = ContextVar(
    'rsrefseg_unsafe_load', default=False)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or not a checkpoint at all."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs globals outside the allow-list (not loaded)."""


class RemoteCheckpointError(ValueError):
    """A checkpoint given as a URL or remote path (not fetched)."""


class ChangedCheckpointError(CorruptCheckpointError):
    """A checkpoint's weights no longer match the hash written with them."""


def is_remote_checkpoint(filename: Union[str, os.PathLike]) -> bool:
    """Whether ``filename`` names a URL or a remote store (``scheme://``)."""
    return '://' in os.fspath(filename)


def _remote_error(filename: Union[str, os.PathLike]) -> RemoteCheckpointError:
    return RemoteCheckpointError(
        f'{os.fspath(filename)}: checkpoints are only loaded from local '
        'files. A URL or remote store would be downloaded and unpickled '
        'without the safe loader\'s allow-list (mmengine passes '
        'weights_only=False), so a served file could run code. Download '
        'the file first (check it against its publisher\'s checksum) and '
        'pass the local path.')


def check_local_checkpoint(filename: Union[str, os.PathLike]) -> None:
    """Refuse a checkpoint given as a URL or remote path.

    Args:
        filename (str | PathLike): The checkpoint as the user gave it.

    Raises:
        RemoteCheckpointError: ``filename`` has a ``scheme://`` (``http``,
            ``https``, ``s3``, ``open-mmlab``, ...); nothing is fetched.
    """
    if is_remote_checkpoint(filename):
        raise _remote_error(filename)


def _history_buffer_getattr(owner: Any, name: str) -> Callable:
    """``getattr`` for unpickling: only ``HistoryBuffer.<statistic>``.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which
    pickle writes as ``getattr(HistoryBuffer, 'min')`` etc.

    Raises:
        UnsafeCheckpointError: Any other owner or attribute.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(owner, name)
    raise UnsafeCheckpointError(
        f'getattr({owner!r}, {name!r}) is not allowed by the safe '
        'checkpoint loader (only HistoryBuffer statistics methods are)')


def runner_safe_globals() -> List[SafeGlobal]:
    """The globals allowed in checkpoints, for ``torch.serialization``.

    Returns:
        list: Callables / classes and ``(callable, 'module.name')`` pairs
        (for names that differ between numpy versions and for the
        restricted ``builtins.getattr``).
    """
    multiarray = np._core.multiarray if hasattr(np, '_core') else \
        np.core.multiarray
    allowed: List[SafeGlobal] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for prefix in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        allowed += [(multiarray._reconstruct, f'{prefix}._reconstruct'),
                    (multiarray.scalar, f'{prefix}.scalar')]
    # numpy >= 1.25 has one class per dtype (np.dtypes.Float64DType, ...);
    # unpickling a dtype instance needs its class.
    allowed += sorted(
        {type(np.dtype(name))
         for name in NUMPY_DTYPES} - {np.dtype},
        key=lambda t: t.__name__)
    return allowed


def _allowed_names() -> set:
    names = set()
    for item in runner_safe_globals():
        if isinstance(item, tuple):
            names.add(item[1])
        else:
            names.add(f'{item.__module__}.{item.__qualname__}')
    return names


def unsafe_load_enabled() -> bool:
    """Whether loads of this thread / task may unpickle fully (inside
    :func:`allow_unsafe_load`)."""
    return _unsafe_load.get()


@contextmanager
def allow_unsafe_load(enabled: bool = True) -> Iterator[None]:
    """Opt in to full unpickling for the loads run inside the block.

    ``--unsafe-load`` of the tools and demos wraps their work in it. The
    opt-in is a context variable: it holds for the code this thread (or
    asyncio task) runs inside the block, and ends with the block. Other
    threads, threads started inside the block and the code after it load
    safely.

    Args:
        enabled (bool): False makes the block a no-op (so that a command
            line flag can be passed straight through). Defaults to True.
    """
    if enabled:
        print_log(
            'unsafe load opted in (--unsafe-load): checkpoints are unpickled '
            'without restrictions; only load files you trust',
            logger='current',
            level=logging.WARNING)
    token = _unsafe_load.set(_unsafe_load.get() or enabled)
    try:
        yield
    finally:
        _unsafe_load.reset(token)


class _AllowList:
    """:func:`runner_safe_globals` in torch's allow-list while loads of
    :func:`safe_torch_load` run.

    ``torch.serialization.safe_globals`` edits one process-wide set, not a
    per-thread one. The globals are therefore added when the first of these
    loads (in any thread) starts and removed when the last one ends, counted
    under a lock, so that a load never loses them half-way because another
    one finished. While such a load runs, ``torch.load`` calls of other code
    in the process accept these globals too: they are the benign allow-list
    above (the restricted ``getattr`` resolves HistoryBuffer's statistics
    only), never anything that runs code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._context: Optional[Any] = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                present = set(torch.serialization.get_safe_globals())
                self._context = torch.serialization.safe_globals(
                    [g for g in runner_safe_globals() if g not in present])
                self._context.__enter__()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._context.__exit__(None, None, None)
                    self._context = None


_allow_listed = _AllowList()


def _structure_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a readable checkpoint container, or None.

    A checkpoint is a zip archive (``torch.save``'s format: every member
    passes its CRC check, a ``data.pkl`` record holds the pickle and every
    storage it refers to has its ``data/<key>`` record) or a legacy torch
    file.
    """
    if not zipfile.is_zipfile(path):
        if tarfile.is_tarfile(path):
            return None  # torch's oldest format, read by torch alone
        is_legacy, problem = legacy_magic(path)
        if is_legacy:
            return problem
        return ('it is neither a zip archive (torch.save\'s format) nor a '
                'legacy torch file')
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            names = archive.namelist()
            pickles = [
                n for n in names if n == 'data.pkl' or (
                    n.endswith('/data.pkl') and n.count('/') == 1)
            ]
            if bad_member is not None or not pickles:
                keys = []
            else:
                try:
                    keys = storage_keys(archive.read(pickles[0]))
                except MalformedPickleError as e:
                    cause = e.__cause__ or e
                    return (f'its {pickles[0]} is not a valid pickle '
                            f'({type(cause).__name__}: {str(cause)[:80]})')
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
            NotImplementedError) as e:
        return f'its zip archive cannot be read ({type(e).__name__}: {e})'
    if bad_member is not None:
        return f'the zip member {bad_member} fails its CRC check'
    if not pickles:
        return 'its zip archive has no data.pkl record'
    prefix = pickles[0][:-len('data.pkl')]
    missing = [k for k in keys if f'{prefix}data/{k}' not in names]
    if missing:
        return (f'its zip archive lacks the records of {len(missing)} '
                f'tensor storage(s) ({prefix}data/{missing[0]}, ...)')
    return None


def _other_checkpoints(filename: str, limit: int = 3) -> List[str]:
    """The newest other ``.pth`` files beside ``filename``."""
    folder = osp.dirname(osp.abspath(filename))
    try:
        names = [n for n in os.listdir(folder) if n.endswith('.pth')]
    except OSError:
        return []
    paths = [osp.join(folder, n) for n in names]
    paths = [p for p in paths if not osp.samefile(p, filename)] \
        if osp.exists(filename) else paths
    return sorted(paths, key=osp.getmtime, reverse=True)[:limit]


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _first_error(error: BaseException) -> BaseException:
    """The exception ``error`` was raised for (torch re-raises the
    unpickler's error with a longer message)."""
    return list(_exception_chain(error))[-1]


def _corrupt_error(filename: str, reason: str,
                   error: BaseException) -> CorruptCheckpointError:
    others = _other_checkpoints(filename)
    hint = (f'; the newest other checkpoints there: {", ".join(others)}'
            if others else '')
    error = _first_error(error)
    return CorruptCheckpointError(
        f'{filename}: cannot be read as a checkpoint, the file is truncated '
        f'or corrupt: {reason} ({type(error).__name__}: '
        f'{str(error)[:160]}), as an interrupted copy or download leaves '
        'it. Load (or --resume from) the previous checkpoint instead'
        f'{hint}.')


def _unsafe_error(filename: str, reason: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f'{filename}: refused by the safe checkpoint loader: {reason} '
        '(allowed: tensors, containers, numpy arrays/scalars, mmengine '
        'HistoryBuffer). Unpickling it could run code. If you trust this '
        f'file, pass --unsafe-load ({UNSAFE_LOAD_TOOLS}) or wrap the call in '
        'rsrefseg_mm.utils.allow_unsafe_load().')


def _load_error(filename: str, path: str, error: Exception,
                trusted: bool) -> Optional[Exception]:
    """The error to raise for a failed ``torch.load`` of ``path``.

    Decided from the exception types, the file's structure and the globals
    its pickle names (:func:`torch.serialization.
    get_unsafe_globals_in_checkpoint`).

    Returns:
        Exception | None: :class:`CorruptCheckpointError`,
        :class:`UnsafeCheckpointError`, or None to re-raise ``error``.
    """
    if path.endswith('.safetensors'):
        return None  # torch.load hands it to safetensors (no pickle)
    if isinstance(error, pickle.UnpicklingError):
        if not trusted:
            # the restricted getattr refused a lookup: its own message
            for cause in _exception_chain(error):
                if isinstance(cause, UnsafeCheckpointError):
                    return _unsafe_error(filename, str(cause))
        if zipfile.is_zipfile(path):
            try:
                found = torch.serialization.get_unsafe_globals_in_checkpoint(
                    path)
            except (RuntimeError, ValueError, EOFError,
                    pickle.UnpicklingError) as e:
                problem = _structure_problem(path) or (
                    'its data.pkl is not a valid pickle '
                    f'({type(e).__name__}: {str(e)[:80]})')
                return _corrupt_error(filename, problem, error)
            refused = sorted(set(found) - _allowed_names())
            if refused and not trusted:
                return _unsafe_error(
                    filename, f'it needs {", ".join(refused)}, which is '
                    'not on the allow-list')
    problem = _structure_problem(path)
    if problem is not None:
        return _corrupt_error(filename, problem, error)
    if isinstance(error, EOFError):  # a legacy file cut short
        return _corrupt_error(filename, 'its pickle ends early', error)
    if isinstance(error, pickle.UnpicklingError) and not trusted:
        # refused by the weights_only unpickler for something other than a
        # global it names (e.g. a construct it does not support, or a
        # legacy file): torch's own reason
        return _unsafe_error(filename, str(_first_error(error))[:300])
    return None


def safe_torch_load(filename: Union[str, os.PathLike],
                    map_location: Optional[Any] = None,
                    max_expansion: Optional[float] = None) -> Any:
    """``torch.load`` of a local checkpoint file, through the allow-list,
    within size limits, with its weights' hash checked.

    Before ``torch.load``, :func:`~rsrefseg_mm.utils.checkpoint_limits.
    check_checkpoint_size` refuses a file that claims more memory than its
    size allows (records unpacking to more than ``max_expansion`` times the
    file; a pickle building more than
    :data:`~rsrefseg_mm.utils.checkpoint_limits.MAX_PICKLE_BYTES` of
    objects; the pickle is not checked inside :func:`allow_unsafe_load`).
    ``weights_only`` is always passed to ``torch.load``: True with
    :func:`runner_safe_globals` allowed, or False inside
    :func:`allow_unsafe_load` (of this thread / task). A loaded checkpoint
    whose ``meta`` holds ``state_dict_sha256`` (those this project writes)
    must match it; a file without one loads with a warning, logged once
    per file.

    Args:
        filename (str | PathLike): Local file written by ``torch.save``
            (``~`` is expanded).
        map_location: Same as :func:`torch.load`.
        max_expansion (float, optional): How many times its size on disk
            a zip checkpoint's records may unpack to. Defaults to the
            enclosing :func:`~rsrefseg_mm.utils.checkpoint_limits.
            checkpoint_limits` block's (2 outside one).

    Returns:
        The unpickled object.

    Raises:
        RemoteCheckpointError: ``filename`` is a URL / remote path.
        FileNotFoundError: No such file.
        ValueError: ``max_expansion`` is not a number >= 1.
        CheckpointLimitError: The file claims more memory than its size
            allows (nothing of it was unpickled); the message names it,
            what it claims and the limit.
        UnsafeCheckpointError: The file needs globals outside the
            allow-list (nothing of it has run); the message names the file,
            the globals and how to opt in.
        CorruptCheckpointError: The file is truncated or not a checkpoint;
            the message names it and the newest other checkpoints beside
            it.
        ChangedCheckpointError: Its weights differ from the hash written
            with them.
    """
    filename = os.fspath(filename)
    check_local_checkpoint(filename)
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{filename} can not be found.')
    if max_expansion is not None:
        max_expansion = check_max_expansion(max_expansion)
    trusted = unsafe_load_enabled()
    try:
        check_checkpoint_size(
            path, filename, max_expansion, scan_pickle=not trusted)
    except CheckpointLimitError:
        raise
    except Exception as error:  # unreadable: told apart like torch's errors
        replacement = _load_error(filename, path, error, trusted) or \
            _corrupt_error(filename, 'its structure cannot be read', error)
        raise replacement from error
    try:
        if trusted:
            print_log(
                f'{filename}: loading with weights_only=False (unsafe load '
                'opted in); the file can run code',
                logger='current',
                level=logging.WARNING)
            checkpoint = torch.load(
                path, map_location=map_location, weights_only=False)
        else:
            with _allow_listed():
                checkpoint = torch.load(
                    path, map_location=map_location, weights_only=True)
    except Exception as error:
        replacement = _load_error(filename, path, error, trusted)
        if replacement is None:
            raise
        raise replacement from error
    verify_state_dict_hash(checkpoint, filename)
    return checkpoint


_warned_unhashed = set()
_warned_lock = threading.Lock()


def verify_state_dict_hash(checkpoint: Any, filename: str) -> bool:
    """Check a loaded checkpoint's ``state_dict`` against the
    ``meta['state_dict_sha256']`` written with it.

    Args:
        checkpoint: What ``torch.load`` returned.
        filename (str): The file, for messages.

    Returns:
        bool: True when the hash was checked; False for a file without one
        (official weights, checkpoints of other tools), which is logged
        once per file as a warning.

    Raises:
        ChangedCheckpointError: The weights differ from the hash, or the
            hash / weights cannot be compared; names the file.
    """
    expected = stored_state_dict_hash(checkpoint)
    if expected is None:
        key = osp.realpath(osp.expanduser(filename))
        with _warned_lock:
            first = key not in _warned_unhashed
            _warned_unhashed.add(key)
        if first:
            print_log(
                f'{filename}: carries no meta[{HASH_KEY!r}] (it was not '
                'written by RSRefSegRunner or this project\'s converters), '
                'so a change to its weights since it was written cannot be '
                'detected; loading it as it is',
                logger='current',
                level=logging.WARNING)
        return False
    state_dict = checkpoint.get('state_dict')
    problem = None
    if not isinstance(expected, str) or len(expected) != 64:
        problem = f'its meta[{HASH_KEY!r}] is not a sha256 ({expected!r:.80})'
    elif not isinstance(state_dict, dict):
        problem = f'it has meta[{HASH_KEY!r}] but no state_dict'
    else:
        try:
            actual = state_dict_sha256(state_dict)
        except UnhashableTensorError as e:
            problem = f'its state_dict cannot be hashed: {e}'
        else:
            if actual != expected:
                problem = (f'its state_dict hashes to {actual[:16]}..., not '
                           f'to the {expected[:16]}... written with it')
    if problem is None:
        return True
    raise ChangedCheckpointError(
        f'{filename}: changed after it was written: {problem}. Its bytes '
        'were altered by a disk, copy or download error, or by an edit; do '
        'not use it. Copy it again from its source, or load (or --resume '
        'from) another checkpoint. A checkpoint whose state_dict you '
        'changed on purpose needs a new hash: '
        'rsrefseg_mm.utils.add_state_dict_hash(checkpoint) before '
        'torch.save.')


def load_from_local_safely(filename: str,
                           map_location: Optional[Any] = None) -> Any:
    """mmengine ``CheckpointLoader``'s loader of local paths (prefix
    ``''``): :func:`safe_torch_load`.

    Args:
        filename (str): Local checkpoint path.
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded checkpoint.
    """
    return safe_torch_load(filename, map_location=map_location)


def load_from_remote_refused(filename: str,
                             map_location: Optional[Any] = None) -> Any:
    """mmengine ``CheckpointLoader``'s loader of :data:`REMOTE_PREFIXES`:
    refuses the path before anything is fetched.

    Raises:
        RemoteCheckpointError: Always (naming ``filename``).
    """
    raise _remote_error(filename)


def register_checkpoint_loaders(
        remote_prefixes: Sequence[str] = REMOTE_PREFIXES) -> None:
    """Route mmengine's ``CheckpointLoader`` through this module.

    Local paths (prefix ``''``, which matches any path no other prefix
    does) load with :func:`load_from_local_safely`; ``remote_prefixes``
    raise :class:`RemoteCheckpointError`. Importing ``rsrefseg_mm`` calls
    it.

    Args:
        remote_prefixes (Sequence[str]): Prefixes (regular expressions,
            matched at the start of the path) to refuse. Defaults to
            :data:`REMOTE_PREFIXES`.
    """
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safely, force=True)
    CheckpointLoader.register_scheme(
        prefixes=list(remote_prefixes),
        loader=load_from_remote_refused,
        force=True)


register_checkpoint_loaders()
