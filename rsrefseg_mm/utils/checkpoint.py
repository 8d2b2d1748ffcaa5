"""Safe checkpoint loading: ``weights_only=True`` plus an explicit allow-list.

Unpickling a ``.pth`` file can run arbitrary code; torch's ``weights_only``
unpickler (the default of ``torch.load`` since torch 2.6) only rebuilds
tensors, containers and the globals it is told are safe. The checkpoints
mmengine's runner saves hold a few other objects, allowed here by
:func:`runner_safe_globals`:

* ``mmengine.logging.HistoryBuffer`` (the message hub's logged scalars) and a
  restricted ``getattr`` that only resolves its built-in statistics methods
  (``min``, ``max``, ``current``, ``mean``), which the buffer pickles;
* numpy arrays, numeric scalars and numeric dtypes (``eta`` and the buffers'
  histories), under numpy 2's and numpy 1's module names.

Nothing is registered globally. The allow-list applies where rsrefseg_mm
loads a file: its weight-file readers (:func:`safe_torch_load`), its runner
(:class:`~rsrefseg_mm.engine.RSRefSegRunner`: ``load_from``, ``resume``) and
:func:`~rsrefseg_mm.apis.init_referring_model`, each through
:func:`checkpoint_loading`. A pickle that needs any other global (e.g.
``os.system`` in a crafted file) raises :class:`UnsafeCheckpointError`
naming the file and the refused globals, before any of its code runs.

For a file you trust, opt in for a block of code with
:func:`allow_unsafe_load` (``--unsafe-load`` of ``tools/train.py``,
``tools/test.py`` and the demos) or for a whole process with the
environment variable ``RSREFSEG_UNSAFE_LOAD=1``; such loads use
``weights_only=False`` and log a warning.
"""
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log

#: Environment variable that opts a whole process in to full unpickling.
UNSAFE_LOAD_ENV = 'RSREFSEG_UNSAFE_LOAD'
#: torch's switch for ``torch.load`` calls that do not pass
#: ``weights_only`` (mmengine's loaders), set inside a trusted load only.
TORCH_NO_WEIGHTS_ONLY_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
#: HistoryBuffer statistics the restricted ``getattr`` may resolve.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
#: numpy dtypes a checkpoint may hold (no object / void / string dtypes).
NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                'uint32', 'uint64', 'float16', 'float32', 'float64',
                'longdouble', 'complex64', 'complex128')

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_unsafe_load: ContextVar[bool] = ContextVar(
    'rsrefseg_unsafe_load', default=False)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or not a checkpoint at all."""


#: Messages of torch / zipfile / pickle for files that are cut or garbage.
CORRUPT_MARKERS = ('PytorchStreamReader', 'zip archive', 'central directory',
                   'invalid load key', 'truncated', 'Ran out of input',
                   'unexpected EOF', 'corrupt')


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


def _corrupt_error(filename: str, error: BaseException) -> Exception:
    others = _other_checkpoints(filename)
    hint = (f'; the newest other checkpoints there: {", ".join(others)}'
            if others else '')
    return CorruptCheckpointError(
        f'{filename}: cannot be read as a checkpoint, the file is truncated '
        f'or corrupt ({type(error).__name__}: {str(error)[:160]}), as an '
        'interrupted copy or download leaves it. Load (or --resume from) '
        f'the previous checkpoint instead{hint}.')


def _not_zip(filename: str) -> bool:
    """A local file that is not a zip archive (torch.save's format)."""
    return osp.isfile(filename) and not zipfile.is_zipfile(filename)


def _is_corrupt(error: BaseException) -> bool:
    if isinstance(error, (EOFError, zipfile.BadZipFile)):
        return True
    return isinstance(
        error, (RuntimeError, pickle.UnpicklingError, ValueError)) and any(
            m in str(error) for m in CORRUPT_MARKERS)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs globals outside the allow-list (not loaded)."""


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
    """Whether loads here may unpickle without the allow-list.

    True inside :func:`allow_unsafe_load` or when the environment variable
    ``RSREFSEG_UNSAFE_LOAD`` is ``1`` / ``true`` / ``yes`` / ``on``.
    """
    return _unsafe_load.get() or os.environ.get(
        UNSAFE_LOAD_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


@contextmanager
def allow_unsafe_load(enabled: bool = True) -> Iterator[None]:
    """Opt in to full unpickling for the code run inside the block.

    ``--unsafe-load`` of the tools and demos wraps their work in it. The
    opt-in ends with the block (it is a context variable: other threads and
    the code after the block load safely).

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


def _refusal_reason(filename: str, error: Exception) -> str:
    """What the safe unpickler refused in ``filename`` (read, not run)."""
    cause = error.__context__
    while cause is not None:  # our restricted getattr refused a lookup
        if isinstance(cause, UnsafeCheckpointError):
            return str(cause)
        cause = cause.__context__
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
        refused = sorted(set(found) - _allowed_names())
    except Exception:  # not a local zip checkpoint: use the message
        refused = []
    refused = refused or re.findall(r'GLOBAL (\S+)', str(error))
    if refused:
        return f'it needs {", ".join(refused)}, which is not on the allow-list'
    return str(error)


@contextmanager
def _allow_listed(filename: str) -> Iterator[None]:
    """``torch.load`` calls in the block take :func:`runner_safe_globals`;
    a refusal becomes an :class:`UnsafeCheckpointError` naming ``filename``.
    """
    # only the globals not yet allowed are added (and removed on exit), so
    # that nested blocks do not remove what an outer block allowed
    present = set(torch.serialization.get_safe_globals())
    added = [g for g in runner_safe_globals() if g not in present]
    try:
        with torch.serialization.safe_globals(added):
            yield
    except UnsafeCheckpointError:
        raise  # from a nested load, already names its file
    except pickle.UnpicklingError as e:
        if _is_corrupt(e) or (_not_zip(filename)
                              and not re.search(r'GLOBAL \S+', str(e))):
            raise  # not a refused global: checkpoint_loading names it
        raise UnsafeCheckpointError(
            f'{filename}: refused by the safe checkpoint loader: '
            f'{_refusal_reason(filename, e)} (allowed: tensors, containers, '
            f'numpy arrays/scalars, mmengine HistoryBuffer). Unpickling it '
            f'could run code. If you trust this file, pass --unsafe-load '
            f'(tools/train.py, tools/test.py, demo/image_demo.py, '
            f'demo/web_demo.py), wrap the call in rsrefseg_mm.utils.'
            f'allow_unsafe_load() or set {UNSAFE_LOAD_ENV}=1.') from e


@contextmanager
def _trusted(filename: str) -> Iterator[None]:
    """``torch.load`` calls in the block that do not pass ``weights_only``
    (mmengine's loaders) unpickle fully: torch's own switch for them,
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, is set for the block only."""
    print_log(
        f'{filename}: loading with weights_only=False (unsafe load opted '
        'in); the file can run code',
        logger='current',
        level=logging.WARNING)
    previous = os.environ.get(TORCH_NO_WEIGHTS_ONLY_ENV)
    os.environ[TORCH_NO_WEIGHTS_ONLY_ENV] = '1'
    try:
        yield
    finally:
        if previous is None:
            del os.environ[TORCH_NO_WEIGHTS_ONLY_ENV]
        else:
            os.environ[TORCH_NO_WEIGHTS_ONLY_ENV] = previous


@contextmanager
def checkpoint_loading(filename: str) -> Iterator[None]:
    """Load ``filename`` safely with code that calls ``torch.load``.

    Wrap a call that loads one checkpoint through ``torch.load`` without a
    ``weights_only`` argument (mmengine's ``CheckpointLoader``, e.g.
    ``Runner.load_checkpoint`` or :func:`mmseg.apis.init_model`): inside the
    block the load keeps torch's ``weights_only=True`` default and accepts
    the globals of :func:`runner_safe_globals` (or, opted in with
    :func:`allow_unsafe_load` / ``RSREFSEG_UNSAFE_LOAD=1``, unpickles
    fully). Nothing outside the block changes.

    Args:
        filename (str): The checkpoint the block loads (named in errors).

    Raises:
        UnsafeCheckpointError: The file needs other globals; the message
            names the file, the globals and how to opt in.
        CorruptCheckpointError: The file is truncated or not a checkpoint;
            the message names it and the newest other checkpoints beside
            it.
    """
    loading = _trusted if unsafe_load_enabled() else _allow_listed
    try:
        with loading(filename):
            yield
    except (CorruptCheckpointError, UnsafeCheckpointError):
        raise
    except Exception as e:
        cause = e.__cause__ or e
        if _not_zip(filename) or _is_corrupt(e) or _is_corrupt(cause):
            raise _corrupt_error(filename, cause) from e
        raise


def safe_torch_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """``torch.load`` of a local file through :func:`checkpoint_loading`.

    Args:
        filename (str): Local file written by ``torch.save``.
        map_location: Same as :func:`torch.load`.

    Returns:
        The unpickled object.

    Raises:
        UnsafeCheckpointError: The file needs globals outside the
            allow-list (and no unsafe load was opted in).
    """
    with checkpoint_loading(filename):
        return torch.load(
            filename,
            map_location=map_location,
            weights_only=not unsafe_load_enabled())
