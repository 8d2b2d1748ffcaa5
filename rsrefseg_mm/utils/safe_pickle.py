"""Unpickle plain data (annotation files) without running code.

A pickle is a program: its ``GLOBAL`` / ``STACK_GLOBAL`` opcodes import any
callable and ``REDUCE`` calls it, so ``pickle.load`` on a downloaded file
(``refs(unc).p`` of a REFER-style dataset from a mirror) can run a command.
Plain data needs no such import: lists, dicts, tuples, strings, bytes,
numbers, booleans and None have opcodes of their own. The restricted
unpickler here resolves only the few globals plain containers need when an
older protocol wrote them (``set``, ``frozenset``; ``_codecs.encode`` for
``bytes`` under protocol 2) and NumPy's numeric scalars (``np.int64(7)``,
as annotation converters written with NumPy leave them: ``numpy.dtype`` of
a bool / integer / float / complex type and the ``scalar`` that reads the
raw bytes into it), and refuses every other one before it is imported,
naming the file and the global it asked for.

A pickle can also make a small file stand for a huge object: its memo
opcodes reference an object again, so a 2 MB file of a million references
to one list is a list of a million lists to whoever walks it (a dataset
expanding refs, a JSON export), and deep nesting overflows recursive
readers. What is loaded is therefore walked once, iteratively, counting
containers, their items and string lengths as if every reference were a
copy; more than :data:`NODES_PER_BYTE` per byte of the file (plain data
without shared references stays far below one per byte) or nesting deeper
than :data:`MAX_DEPTH` is refused with :class:`PlainDataLimitError`.
"""
import codecs
import io
import os
import pickle
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

#: ``(module, name)`` of the globals plain data may need, per the module
#: name Python 3 and Python 2 pickles use.
PLAIN_DATA_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('__builtin__', 'set'): set,
    ('__builtin__', 'frozenset'): frozenset,
    ('_codecs', 'encode'): codecs.encode,
}
#: ``(module, name)`` of NumPy's scalar constructor (NumPy 1.x and 2.x)
#: and of ``numpy.dtype``.
NUMPY_SCALAR_GLOBALS = (('numpy.core.multiarray', 'scalar'),
                        ('numpy._core.multiarray', 'scalar'))
NUMPY_DTYPE_GLOBAL = ('numpy', 'dtype')
#: ``dtype.kind`` of the NumPy scalars plain data may hold.
NUMERIC_KINDS = 'biufc'
#: Expanded size allowed per byte of the file (containers and items count
#: 1, strings and bytes 1 per 64 characters), plus :data:`MIN_NODES`.
NODES_PER_BYTE = 4
MIN_NODES = 100_000
#: Deepest nesting of containers (a REFER refs file nests 5 deep).
MAX_DEPTH = 100


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that plain data never needs.

    Attributes:
        source (str): The file (for the message).
        global_name (str): ``module.name`` of the refused global.
    """

    def __init__(self, source: str, global_name: str) -> None:
        self.source = source
        self.global_name = global_name
        super().__init__(
            f'{source}: refused to unpickle: the file asks for the global '
            f'{global_name}, which plain annotation data (lists, dicts, '
            'strings, numbers) never needs; a file that does may run code '
            'when loaded. Nothing of it was run. Use the original release '
            'of the file, or a JSON export of it.')


class PlainDataLimitError(pickle.UnpicklingError):
    """Plain data that expands far beyond its file, or nests too deep."""


def check_plain_data_size(data: Any,
                          source: str,
                          max_nodes: int,
                          max_depth: int = MAX_DEPTH) -> int:
    """Walk ``data`` iteratively, counting what a full copy would hold.

    Args:
        data: Lists, tuples, sets, dicts, strings, bytes and scalars.
        source (str): File name for the message.
        max_nodes (int): Most containers + items (+ string length / 64)
            allowed; the walk stops as soon as it is exceeded.
        max_depth (int): Deepest nesting allowed.

    Returns:
        int: The count (at most ``max_nodes``).

    Raises:
        PlainDataLimitError: Naming ``source`` and the limit exceeded.
    """
    count = 1
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            count += len(item) // 64
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            if depth > max_depth:
                raise PlainDataLimitError(
                    f'{source}: containers nest more than {max_depth} deep; '
                    'annotation data never does (refused before any reader '
                    'recurses into it)')
            items = list(item.items()) if isinstance(item, dict) else item
            count += len(items)
            if count <= max_nodes:
                stack.extend((x, depth + 1) for x in items)
        if count > max_nodes:
            raise PlainDataLimitError(
                f'{source}: the data expands to more than {max_nodes:,} '
                'objects (references to one object count as copies), far '
                'more than a file of this size holds without shared '
                'references; refused so that reading it cannot exhaust '
                'memory')
    return count


def _node_limit(num_bytes: int, max_nodes: Optional[int]) -> int:
    return max_nodes if max_nodes is not None else \
        MIN_NODES + NODES_PER_BYTE * num_bytes


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and scalars only.

    Args:
        file (BinaryIO): The pickle stream.
        source (str): File name for error messages.
        **kwargs: Other :class:`pickle.Unpickler` arguments (``encoding``,
            ``errors`` for Python 2 pickles).
    """

    def __init__(self, file, source: str = 'pickle', **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Callable:
        """Resolve an allowed global, refuse any other.

        Raises:
            UnsafePickleError: For a global outside
                :data:`PLAIN_DATA_GLOBALS` (nothing is imported).
        """
        if (module, name) == NUMPY_DTYPE_GLOBAL:
            return self._numeric_dtype
        if (module, name) in NUMPY_SCALAR_GLOBALS:
            return self._numeric_scalar
        allowed = PLAIN_DATA_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(self.source, f'{module}.{name}')
        return allowed

    def _numeric_dtype(self,
                       spec: Any,
                       align: bool = False,
                       copy: bool = False) -> np.dtype:
        """``numpy.dtype(spec, align, copy)`` for numeric type codes only."""
        if not isinstance(spec, str) or spec[:1] not in NUMERIC_KINDS:
            raise UnsafePickleError(self.source, f'numpy.dtype({spec!r:.40})')
        return np.dtype(spec, bool(align), bool(copy))

    def _numeric_scalar(self, dtype: Any, data: Any = None) -> np.generic:
        """A NumPy scalar of a numeric ``dtype`` from its raw bytes."""
        # the dtype's state (BUILD) is the pickle's: it must still be a
        # plain numeric type that its type string alone describes
        if not isinstance(dtype, np.dtype) or dtype.kind not in \
                NUMERIC_KINDS or dtype.hasobject or \
                dtype != np.dtype(dtype.str) or \
                not isinstance(data, (bytes, str)):
            raise UnsafePickleError(
                self.source, f'numpy scalar of {dtype!r:.40} from '
                f'{type(data).__name__}')
        if isinstance(data, str):  # Python 2 pickles read with latin1
            data = data.encode('latin1')
        if len(data) != dtype.itemsize:
            raise pickle.UnpicklingError(
                f'{self.source}: a numpy {dtype} scalar needs '
                f'{dtype.itemsize} bytes, the pickle has {len(data)}')
        return np.frombuffer(data, dtype=dtype, count=1)[0]

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids reference external objects: refused."""
        raise UnsafePickleError(self.source, f'persistent object {pid!r:.60}')


def load_plain_pickle(data: Union[bytes, bytearray, memoryview],
                      source: str = 'pickle',
                      max_nodes: Optional[int] = None,
                      **kwargs) -> Any:
    """Unpickle bytes that hold plain data only.

    Args:
        data (bytes): The pickle's bytes.
        source (str): File name for error messages.
        max_nodes (int, optional): See :func:`check_plain_data_size`;
            default :data:`MIN_NODES` + :data:`NODES_PER_BYTE` x the size.
        **kwargs: ``encoding`` / ``errors`` for Python 2 pickles (see
            :class:`pickle.Unpickler`).

    Returns:
        Any: The lists, dicts, strings, numbers ... the pickle holds.

    Raises:
        UnsafePickleError: The pickle asks for another global (the message
            names ``source`` and the global).
        PlainDataLimitError: It expands too far or nests too deep.
        pickle.UnpicklingError: The bytes are not a valid pickle.
    """
    obj = PlainDataUnpickler(io.BytesIO(data), source, **kwargs).load()
    check_plain_data_size(obj, source, _node_limit(len(data), max_nodes))
    return obj


def load_plain_pickle_file(path: str,
                           max_nodes: Optional[int] = None,
                           **kwargs) -> Any:
    """:func:`load_plain_pickle` on a file's content.

    Args:
        path (str): The pickle file.
        max_nodes, **kwargs: See :func:`load_plain_pickle`.

    Returns:
        Any: The plain data the file holds.
    """
    with open(path, 'rb') as f:
        obj = PlainDataUnpickler(f, str(path), **kwargs).load()
    check_plain_data_size(obj, str(path),
                          _node_limit(os.path.getsize(path), max_nodes))
    return obj
