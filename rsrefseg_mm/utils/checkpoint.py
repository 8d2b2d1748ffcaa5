"""Safe checkpoint loading: ``weights_only=True`` plus an explicit allow-list.

Unpickling a ``.pth`` file can run arbitrary code; torch's ``weights_only``
unpickler only rebuilds tensors, containers and the globals it is told are
safe. mmengine 0.10.7 loads local checkpoints with a bare ``torch.load``,
which (torch >= 2.6) rejects the few non-tensor objects our runner saves.
Importing :mod:`rsrefseg_mm` registers :func:`load_from_local` as mmengine's
loader for local paths: it keeps ``weights_only=True`` and allows exactly the
globals found in runner checkpoints (:func:`runner_safe_globals`):

* ``mmengine.logging.HistoryBuffer`` (the message hub's logged scalars) and a
  restricted ``getattr`` that only resolves its built-in statistics methods
  (``min``, ``max``, ``current``, ``mean``), which the buffer pickles;
* numpy arrays, numeric scalars and numeric dtypes (``eta`` and the buffers'
  histories), under numpy 2's and numpy 1's module names.

Everything else (e.g. ``os.system`` in a crafted pickle) raises
:class:`UnsafeCheckpointError` naming the file and the refused globals,
before any of the file's code can run. For a file you trust, opt in with
``--unsafe-load`` (``tools/train.py``, ``tools/test.py``,
``demo/image_demo.py``) or the environment variable
``RSREFSEG_UNSAFE_LOAD=1``; the load then uses ``weights_only=False`` and
logs a warning.
"""
import logging
import os
import os.path as osp
import pickle
import re
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

#: Environment variable that opts in to full (unsafe) unpickling.
UNSAFE_LOAD_ENV = 'RSREFSEG_UNSAFE_LOAD'
#: HistoryBuffer statistics the restricted ``getattr`` may resolve.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
#: numpy dtypes a checkpoint may hold (no object / void / string dtypes).
NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                'uint32', 'uint64', 'float16', 'float32', 'float64',
                'longdouble', 'complex64', 'complex128')

SafeGlobal = Union[Callable, Tuple[Callable, str]]


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
    allowed += sorted({type(np.dtype(name))
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
    """Whether the user opted in to ``weights_only=False`` loading."""
    return os.environ.get(UNSAFE_LOAD_ENV, '').strip().lower() in (
        '1', 'true', 'yes', 'on')


def enable_unsafe_load() -> None:
    """Opt in for this process and its children (``--unsafe-load``)."""
    os.environ[UNSAFE_LOAD_ENV] = '1'
    print_log(
        f'--unsafe-load: checkpoints are unpickled without restrictions '
        f'({UNSAFE_LOAD_ENV}=1); only load files you trust',
        logger='current',
        level=logging.WARNING)


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
    except Exception:  # not a zip checkpoint: fall back to the message
        refused = []
    refused = refused or re.findall(r'GLOBAL (\S+)', str(error))
    if refused:
        return f'it needs {", ".join(refused)}, which is not on the allow-list'
    return str(error)


def safe_torch_load(filename: str,
                    map_location: Optional[Any] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and the runner allow-list.

    Args:
        filename (str): Local file written by ``torch.save``.
        map_location: Same as :func:`torch.load`.

    Returns:
        The unpickled object.

    Raises:
        UnsafeCheckpointError: The file needs other globals; the message
            names the file, the globals and how to opt in.
    """
    if unsafe_load_enabled():
        print_log(
            f'{filename}: loading with weights_only=False ({UNSAFE_LOAD_ENV}'
            ' is set); the file can run code',
            logger='current',
            level=logging.WARNING)
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(runner_safe_globals()):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'{filename}: refused by the safe checkpoint loader: '
            f'{_refusal_reason(filename, e)} (allowed: tensors, containers, '
            f'numpy arrays/scalars, mmengine HistoryBuffer). Unpickling it '
            f'could run code. If you trust this file, pass --unsafe-load '
            f'(tools/train.py, tools/test.py, demo/image_demo.py) or set '
            f'{UNSAFE_LOAD_ENV}=1.') from e


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location: Optional[str] = None):
    """mmengine's local-path loader, through :func:`safe_torch_load`.

    Args:
        filename (str): Path of the checkpoint (``~`` is expanded).
        map_location (str, optional): Same as :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)
