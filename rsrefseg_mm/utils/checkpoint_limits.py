"""Bounds on the memory a checkpoint file can make the loader allocate,
checked before anything of it is unpickled.

A few kilobytes can ask for gigabytes: a zip record deflated a
thousandfold, a storage that claims more bytes than its record holds, or a
pickle that calls an allowed global with a size (``bytearray(3000000000)``,
``torch.UntypedStorage(n)``, a numpy array or scalar of a huge dtype,
``_codecs.encode`` with the ``hex`` codec applied thirty times over).
torch's ``weights_only`` unpickler allows ``builtins.bytearray``,
``_codecs.encode``, ``builtins.set``, the tensor and storage classes and
the tensor rebuild functions, and :func:`~rsrefseg_mm.utils.checkpoint.
runner_safe_globals` adds numpy's array / scalar / dtype constructors, so
each of these runs under ``weights_only=True``.

:func:`check_checkpoint_size` reads what the file claims without building
it:

* **the container**: the uncompressed sizes of a zip's records (Python's
  central directory and the reader ``torch.load`` uses) may total at most
  ``max_expansion`` times the file's size on disk (``torch.save`` stores
  records uncompressed, so a checkpoint's ratio is about 1); a legacy
  (non-zip) file's storages, stored raw after its pickles, may claim at
  most its size;
* **the pickle** (``data.pkl``, or the pickles of a legacy file): a walk
  over its opcodes that mirrors torch's ``weights_only`` unpickler, with
  stand-ins for every global, computes from the arguments what each call
  would allocate and what every object costs. It refuses objects sized by
  the pickle's numbers alone beyond :data:`MAX_SIZED_BYTES` in all, objects
  beyond :data:`MAX_PICKLE_BYTES` (or :data:`PICKLE_BYTES_PER_FILE_BYTE`
  times the file's size) in all, a storage that claims more than its
  record holds, ``_codecs.encode`` with a codec other than latin1 / utf-8
  / ascii, and sizing calls whose arguments cannot be sized before they are
  built. Its memo is a dict (as torch's), so a memo index of 2**31 costs
  nothing, and it reads no argument past the end of the data.

The limit on the container is ``max_checkpoint_expansion`` (a config key
read by :class:`~rsrefseg_mm.engine.RSRefSegRunner` and
:func:`~rsrefseg_mm.apis.init_referring_model`, the ``max_expansion``
argument of :func:`~rsrefseg_mm.utils.safe_torch_load`, or the
:func:`checkpoint_limits` block); the pickle walk is skipped for files the
user trusts (``--unsafe-load``), whose pickle can run code anyway.
"""
import io
import math
import os
import os.path as osp
import struct
import sys
import tarfile
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pickle import (APPEND, APPENDS, BINFLOAT, BINGET, BININT, BININT1,
                    BININT2, BINPERSID, BINPUT, BINUNICODE, BUILD, EMPTY_DICT,
                    EMPTY_LIST, EMPTY_SET, EMPTY_TUPLE, GLOBAL, LONG1,
                    LONG_BINGET, LONG_BINPUT, MARK, NEWFALSE, NEWOBJ, NEWTRUE,
                    NONE, PROTO, REDUCE, SETITEM, SETITEMS, SHORT_BINSTRING,
                    STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3, UnpicklingError,
                    decode_long)
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
from torch._utils import IMPORT_MAPPING, NAME_MAPPING

#: Default of ``max_checkpoint_expansion``: a zip checkpoint's records may
#: unpack to at most this many times the file's size on disk.
DEFAULT_MAX_EXPANSION = 2.0
#: What the objects that a pickle's numbers alone size may take in all
#: (``bytearray(n)``, ``torch.UntypedStorage(n)``, numpy arrays of a shape
#: / scalars of a dtype, a view's elements beyond its storage): weight
#: files need none of them.
MAX_SIZED_BYTES = 64 * 2**20
#: What all the objects a checkpoint's pickles build may take (bytes, as
#: estimated by the walk: containers, strings, tensor and storage objects,
#: copies): the larger of this and :data:`PICKLE_BYTES_PER_FILE_BYTE` times
#: the file's size. Tensors' data live in the zip records; the pickle holds
#: their names, shapes and small metadata.
MAX_PICKLE_BYTES = 128 * 2**20
#: See :data:`MAX_PICKLE_BYTES` (a checkpoint of many small tensors builds
#: about 2.5 KiB of objects per tensor, and stores each in 200 bytes or
#: more).
PICKLE_BYTES_PER_FILE_BYTE = 16
#: The codecs ``_codecs.encode`` may be called with (pickle protocol 2
#: writes ``bytes`` as ``_codecs.encode(text, 'latin1')``), normalised.
TEXT_CODECS = ('latin1', 'latin-1', 'iso-8859-1', 'utf-8', 'utf8', 'ascii')

#: Estimated cost of the objects the walk sees (bytes; CPython 3.11).
_COST_REF = 8
_COST_ITEM = 16
_COST_DICT_ITEM = 64
_COST_MEMO = 96
_COST_CALL = 256
_COST_TENSOR = 512
#: Reads of the walk: chunk size, and the longest GLOBAL name line.
_READ_CHUNK = 2**20
_MAX_NAME = 2**16

_max_expansion: ContextVar[float] = ContextVar(
    'rsrefseg_max_checkpoint_expansion', default=DEFAULT_MAX_EXPANSION)


class CheckpointLimitError(ValueError):
    """A checkpoint claims more memory than its size allows (nothing of it
    was unpickled)."""


class MalformedPickleError(UnpicklingError):
    """The walk cannot read a checkpoint's pickle (``torch.load`` could
    not either)."""


def format_bytes(n: float) -> str:
    """``n`` bytes as B / KiB / MiB / GiB / TiB, e.g. ``'2.8 GiB'``."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(n) < 1024:
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} TiB'


def current_max_expansion() -> float:
    """The ``max_expansion`` of the enclosing :func:`checkpoint_limits`
    block (:data:`DEFAULT_MAX_EXPANSION` outside one)."""
    return _max_expansion.get()


@contextmanager
def checkpoint_limits(max_expansion: Optional[float] = None) -> Iterator[None]:
    """Set ``max_expansion`` for the loads this thread / task runs inside
    the block (:class:`~rsrefseg_mm.engine.RSRefSegRunner` wraps its
    loads in it with the config's ``max_checkpoint_expansion``).

    Args:
        max_expansion (float, optional): How many times its size on disk a
            zip checkpoint's records may unpack to. None keeps the current
            value.

    Raises:
        ValueError: ``max_expansion`` is not a number >= 1.
    """
    if max_expansion is None:
        yield
        return
    token = _max_expansion.set(check_max_expansion(max_expansion))
    try:
        yield
    finally:
        _max_expansion.reset(token)


def check_max_expansion(value: Any) -> float:
    """``value`` as a valid ``max_checkpoint_expansion`` (a finite number
    >= 1).

    Raises:
        ValueError: Anything else, naming the key and the value.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float('nan')
    if isinstance(value, bool) or not math.isfinite(number) or number < 1:
        raise ValueError(
            f'max_checkpoint_expansion = {value!r}: expected a number >= 1 '
            '(how many times its size on disk a checkpoint\'s zip records '
            f'may unpack to; default {DEFAULT_MAX_EXPANSION:g})')
    return number


class _Obj:
    """What the walk knows of an object a global or a call gives.

    Attributes:
        kind (str): ``'global'`` (a name the pickle imports), ``'bytes'``,
            ``'dtype'``, ``'storage'``, ``'tensor'``, ``'array'`` or
            ``'opaque'`` (anything the walk does not size).
        name (str): The global's or the call's ``module.name``.
        nbytes (int): Memory the object refers to (bytes / storage /
            tensor / array).
        itemsize (int | None): Element size (dtype / storage / tensor /
            array); None when it cannot be known.
        numel (int): Elements (tensor / array).
    """
    __slots__ = ('kind', 'name', 'nbytes', 'itemsize', 'numel')

    def __init__(self,
                 kind: str,
                 name: str = '',
                 nbytes: int = 0,
                 itemsize: Optional[int] = None,
                 numel: int = 0) -> None:
        self.kind = kind
        self.name = name
        self.nbytes = nbytes
        self.itemsize = itemsize
        self.numel = numel

    def __repr__(self) -> str:
        return f'<{self.kind} {self.name}>'


class _Refused(Exception):
    """Raised inside the walk; :func:`check_checkpoint_size` words it."""


class _Budget:
    """What the pickles of one file may still build (bytes).

    Args:
        file_size (int): The file's size on disk.
    """

    def __init__(self, file_size: int) -> None:
        self.objects_limit = max(MAX_PICKLE_BYTES,
                                 PICKLE_BYTES_PER_FILE_BYTE * file_size)
        self.objects = self.objects_limit
        self.sized = MAX_SIZED_BYTES


_EMPTY_SET = _Obj('opaque', 'set')


def _names(objects: Sequence[Any]) -> List[str]:
    return [f'{o.__module__}.{o.__name__}' for o in objects]


_TENSOR_CLASSES = set(_names(torch._tensor_classes)) | {'torch.Tensor'}
#: Element size of the legacy tensor classes (``torch.FloatTensor`` -> 4);
#: 8 for the others.
_CLASS_ITEMSIZE = {
    f'{c.__module__}.{c.__name__}': c.dtype.itemsize
    for c in torch._tensor_classes if isinstance(c.dtype, torch.dtype)
}
_STORAGE_CLASSES = {
    'torch.storage.UntypedStorage', 'torch.storage.TypedStorage',
    'torch.UntypedStorage', 'torch.TypedStorage'
}
_MULTIARRAY = ('numpy._core.multiarray', 'numpy.core.multiarray')
_RECONSTRUCT = {f'{m}._reconstruct' for m in _MULTIARRAY}
_SCALAR = {f'{m}.scalar' for m in _MULTIARRAY}
_TENSOR_VIEWS = {
    f'torch._utils.{n}'
    for n in ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3')
}
_PASS_THROUGH = {
    'torch._utils._rebuild_parameter',
    'torch._utils._rebuild_parameter_with_state',
    'torch.nn.parameter.Parameter'
}
_UNSIZED_TENSORS = {
    f'torch._utils.{n}'
    for n in ('_rebuild_sparse_tensor', '_rebuild_nested_tensor',
              '_rebuild_meta_tensor_no_storage', '_rebuild_wrapper_subclass')
}


def _torch_itemsize(obj: Any) -> Optional[int]:
    """Element size of a ``torch.<dtype>`` global (None if not one)."""
    if isinstance(obj, _Obj) and obj.kind == 'global' and \
            obj.name.startswith('torch.'):
        dtype = getattr(torch, obj.name[len('torch.'):], None)
        if isinstance(dtype, torch.dtype):
            return dtype.itemsize
    return None


def _storage_itemsize(obj: Any) -> Optional[int]:
    """Element size of a storage-type global in a persistent id."""
    if not (isinstance(obj, _Obj) and obj.kind == 'global'
            and obj.name.startswith('torch.')):
        return None
    short = obj.name.rsplit('.', 1)[-1]
    if short == 'UntypedStorage':
        return 1
    try:
        return torch.serialization.StorageType(short).dtype.itemsize
    except (KeyError, AttributeError, RuntimeError):
        return None


def _numpy_itemsize(spec: Any) -> Optional[int]:
    """Element size of a numpy dtype given as a string / bytes / known
    dtype stand-in; None when it cannot be known."""
    if isinstance(spec, _Obj):
        return spec.itemsize if spec.kind == 'dtype' else None
    if isinstance(spec, (str, bytes)) and len(spec) <= 64:
        try:
            return np.dtype(spec).itemsize
        except (TypeError, ValueError, SyntaxError):
            return 0  # numpy refuses it: nothing is allocated
    return None


def _count(shape: Any) -> Optional[int]:
    """Elements of a shape (an int or a sequence of ints); None when it
    cannot be known."""
    if isinstance(shape, (bool, int)):
        return max(int(shape), 0)
    if isinstance(shape, (tuple, list)):
        total = 1
        for dim in shape:
            if not isinstance(dim, (bool, int)):
                return None
            total *= abs(int(dim))
        return total
    return None


def _data_len(value: Any) -> Optional[int]:
    """Bytes (at most) of a value built from a copy of ``value``."""
    if isinstance(value, str):
        return len(value) * 4
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, (tuple, list)):
        return len(value) * 8
    if isinstance(value, _Obj) and value.kind in ('bytes', 'storage', 'tensor',
                                                  'array'):
        return value.nbytes
    return None


class _PickleWalk:
    """Reads one pickle the way torch's ``weights_only`` unpickler does,
    with stand-ins instead of objects, and prices what it would build.

    Args:
        file: Binary file positioned at the pickle (``read`` /
            ``readline``).
        budget (_Budget): Shared by the pickles of one file.
        records (dict[str, int], optional): A zip checkpoint's storage
            records (``key -> bytes``); None for a legacy file, whose
            storages are allocated as they are named (``claimed``).
    """

    def __init__(self, file: Any, budget: _Budget,
                 records: Optional[Dict[str, int]]) -> None:
        self.file = file
        self.budget = budget
        self.records = records
        self.storages: Dict[str, _Obj] = {}
        self.claimed = 0

    # -- accounting --------------------------------------------------------
    def charge(self, nbytes: int, what: Union[str, Callable[[], str]]) -> None:
        """Take ``nbytes`` from the object budget; ``what`` (an opcode's
        name or a callable giving the call) is worded only on a refusal."""
        self.budget.objects -= nbytes
        if self.budget.objects < 0:
            what = what() if callable(what) else f'the opcode {what}'
            raise _Refused(
                'would build more than '
                f'{format_bytes(self.budget.objects_limit)} of objects '
                f'(reached at {what})')

    def sized_call(self,
                   name: str,
                   sized: int,
                   copied: int = 0,
                   detail: str = '') -> None:
        """Price a call that allocates ``sized`` bytes that its numbers
        alone decide and ``copied`` bytes that copy data the file holds."""
        self.budget.sized -= sized
        if self.budget.sized < 0:
            raise _Refused(
                f'calls {name}({detail}), which allocates '
                f'{format_bytes(sized)}; objects sized by the pickle\'s '
                f'numbers alone may take {format_bytes(MAX_SIZED_BYTES)} in '
                'all')
        self.charge(
            copied + _COST_TENSOR, lambda: f'{name}({detail}), which '
            f'allocates {format_bytes(sized + copied)}')

    # -- reading -------------------------------------------------------------
    def read(self, n: int) -> bytes:
        """``n`` bytes, or EOFError where the data ends first (the file is
        never asked for more than it holds)."""
        data = self.file.read(n) if n <= _READ_CHUNK else self._read_long(n)
        if len(data) < n:
            raise EOFError(f'the pickle ends inside a {n}-byte argument')
        return data

    def _read_long(self, n: int) -> bytes:
        parts, left = [], n
        while left > 0:
            part = self.file.read(min(left, _READ_CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b''.join(parts)

    def readline(self) -> bytes:
        line = self.file.readline(_MAX_NAME)
        if not line.endswith(b'\n'):
            raise EOFError('a GLOBAL name is not ended by a newline')
        return line

    # -- the opcode loop ---------------------------------------------------
    def load(self) -> Any:
        read, readline = self.read, self.readline
        memo: Dict[int, Any] = {}
        metastack: List[List[Any]] = []
        stack: List[Any] = []

        def pop_mark() -> List[Any]:
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        while True:
            key = read(1)
            if not key:
                raise EOFError('the pickle ends before its STOP opcode')
            op = key[0]
            if op == GLOBAL[0]:
                module = readline()[:-1].decode('utf-8')
                name = readline()[:-1].decode('utf-8')
                if (module, name) in NAME_MAPPING:
                    module, name = NAME_MAPPING[(module, name)]
                elif module in IMPORT_MAPPING:
                    module = IMPORT_MAPPING[module]
                stack.append(_Obj('global', f'{module}.{name}'))
                self.charge(_COST_ITEM, 'GLOBAL')
            elif op == NEWOBJ[0]:
                args = stack.pop()
                cls = stack.pop()
                stack.append(self.call(cls, args))
            elif op == REDUCE[0]:
                args = stack.pop()
                stack[-1] = self.call(stack[-1], args)
            elif op == BUILD[0]:
                state = stack.pop()
                self.build(stack[-1], state)
            elif op == APPEND[0]:
                item = stack.pop()
                if type(stack[-1]) is list:
                    stack[-1].append(item)
                self.charge(_COST_ITEM, 'APPEND')
            elif op == APPENDS[0]:
                items = pop_mark()
                if type(stack[-1]) is list:
                    stack[-1].extend(items)
                self.charge(_COST_ITEM * len(items), 'APPENDS')
            elif op == SETITEM[0]:
                value, name = stack.pop(), stack.pop()
                if type(stack[-1]) is dict:
                    stack[-1][name] = value
                self.charge(_COST_DICT_ITEM, 'SETITEM')
            elif op == SETITEMS[0]:
                items = pop_mark()
                if type(stack[-1]) is dict:
                    for i in range(0, len(items), 2):
                        stack[-1][items[i]] = items[i + 1]
                self.charge(_COST_DICT_ITEM * (len(items) // 2), 'SETITEMS')
            elif op == MARK[0]:
                metastack.append(stack)
                stack = []
            elif op == TUPLE[0]:
                items = pop_mark()
                stack.append(tuple(items))
                self.charge(40 + _COST_REF * len(items), 'TUPLE')
            elif op == TUPLE1[0]:
                stack[-1] = (stack[-1], )
                self.charge(48, 'TUPLE1')
            elif op == TUPLE2[0]:
                stack[-2:] = [(stack[-2], stack[-1])]
                self.charge(56, 'TUPLE2')
            elif op == TUPLE3[0]:
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
                self.charge(64, 'TUPLE3')
            elif op in (NONE[0], NEWFALSE[0], NEWTRUE[0], EMPTY_TUPLE[0]):
                stack.append({
                    NONE[0]: None,
                    NEWFALSE[0]: False,
                    NEWTRUE[0]: True,
                    EMPTY_TUPLE[0]: ()
                }[op])
                self.charge(_COST_REF, 'NONE / NEWTRUE / NEWFALSE')
            elif op == EMPTY_LIST[0]:
                stack.append([])
                self.charge(sys.getsizeof([]) + _COST_REF, 'EMPTY_LIST')
            elif op == EMPTY_DICT[0]:
                stack.append({})
                self.charge(sys.getsizeof({}) + _COST_REF, 'EMPTY_DICT')
            elif op == EMPTY_SET[0]:
                stack.append(_EMPTY_SET)
                self.charge(sys.getsizeof(set()) + _COST_REF, 'EMPTY_SET')
            elif op == BININT[0]:
                stack.append(struct.unpack('<i', read(4))[0])
                self.charge(32, 'BININT')
            elif op == BININT1[0]:
                stack.append(read(1)[0])
                self.charge(_COST_REF, 'BININT1')
            elif op == BININT2[0]:
                stack.append(struct.unpack('<H', read(2))[0])
                self.charge(32, 'BININT2')
            elif op == BINFLOAT[0]:
                stack.append(struct.unpack('>d', read(8))[0])
                self.charge(32, 'BINFLOAT')
            elif op == BINUNICODE[0]:
                length = struct.unpack('<I', read(4))[0]
                if length > sys.maxsize:
                    raise UnpicklingError('String is too long')
                text = str(read(length), 'utf-8', 'surrogatepass')
                stack.append(text)
                self.charge(sys.getsizeof(text) + _COST_REF, 'BINUNICODE')
            elif op == SHORT_BINSTRING[0]:
                data = read(read(1)[0])
                stack.append(data.decode('utf-8', 'strict'))
                self.charge(sys.getsizeof(data) + _COST_REF, 'SHORT_BINSTRING')
            elif op == BINPERSID[0]:
                stack.append(self.persistent(stack.pop()))
            elif op in (BINGET[0], LONG_BINGET[0]):
                index = (read(1) if op == BINGET[0] else struct.unpack(
                    '<I', read(4)))[0]
                stack.append(memo[index])
                self.charge(_COST_REF, 'BINGET')
            elif op in (BINPUT[0], LONG_BINPUT[0]):
                index = (read(1) if op == BINPUT[0] else struct.unpack(
                    '<I', read(4)))[0]
                memo[index] = stack[-1]
                self.charge(_COST_MEMO, 'BINPUT')
            elif op == LONG1[0]:
                data = read(read(1)[0])
                stack.append(decode_long(data))
                self.charge(32 + len(data), 'LONG1')
            elif op == PROTO[0]:
                read(1)
            elif op == STOP[0]:
                return stack.pop()
            else:
                raise UnpicklingError(
                    f'unsupported opcode {key!r} (torch\'s weights_only '
                    'unpickler does not read it either)')

    # -- persistent ids (tensor storages) ----------------------------------
    def persistent(self, pid: Any) -> _Obj:
        if not (isinstance(pid, tuple) and len(pid) >= 5
                and pid[0] in ('storage', b'storage')):
            raise UnpicklingError(f'unexpected persistent id {pid!r}')
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        itemsize = _storage_itemsize(storage_type)
        if itemsize is None or not isinstance(numel, int) or numel < 0:
            raise UnpicklingError(
                f'the storage {key} has an unknown type or size '
                f'({storage_type!r}, {numel!r})')
        nbytes = numel * itemsize
        if self.records is not None:
            if key not in self.records:
                raise UnpicklingError(f'no record data/{key} for a storage')
            if nbytes > self.records[key]:
                raise _Refused(
                    f'claims {format_bytes(nbytes)} for the storage '
                    f'data/{key}, whose record holds '
                    f'{format_bytes(self.records[key])}')
        elif key not in self.storages:
            self.claimed += nbytes
        storage = self.storages.get(key)
        if storage is None:
            storage = _Obj('storage', key, nbytes, itemsize)
            self.storages[key] = storage
            self.charge(_COST_TENSOR, lambda: f'the storage {key}')
        if self.records is None and len(pid) > 5 and \
                isinstance(pid[5], tuple) and len(pid[5]) == 3 and \
                isinstance(pid[5][2], int):  # a legacy view
            return _Obj('storage', key, min(pid[5][2] * itemsize, nbytes),
                        itemsize)
        return storage

    # -- calls ---------------------------------------------------------------
    def call(self, func: Any, args: Any) -> Any:
        """What ``func(*args)`` (REDUCE) or ``func.__new__(func, *args)``
        (NEWOBJ) gives, priced."""
        name = func.name if isinstance(func, _Obj) and \
            func.kind == 'global' else ''
        if not isinstance(args, (tuple, list)):
            if _is_sizing(name):
                raise _Refused(
                    f'calls {name} with arguments that cannot be sized '
                    'before they are built')
            return self.opaque(name)
        args = tuple(args)
        if name == 'builtins.bytearray':
            return self.bytes_call(name, args)
        if name == '_codecs.encode':
            return self.encode(args)
        if name in _TENSOR_CLASSES or name in _STORAGE_CLASSES:
            return self.legacy_constructor(name, args)
        if name == 'torch.Size':
            if args and isinstance(args[0], (tuple, list)):
                self.charge(40 + 8 * len(args[0]), lambda: 'torch.Size')
                return tuple(args[0])
            return self.opaque(name)
        if name in _TENSOR_VIEWS or name == 'torch._utils._rebuild_qtensor':
            return self.tensor_view(name, args)
        if name in _PASS_THROUGH:
            self.charge(_COST_TENSOR, lambda: name)
            return args[0] if args and isinstance(args[0], _Obj) \
                else self.opaque(name)
        if name in ('torch._utils._rebuild_device_tensor_from_cpu_tensor',
                    'torch._utils._rebuild_device_tensor_from_numpy'):
            return self.device_copy(name, args)
        if name == 'torch._tensor._rebuild_from_type_v2':
            if len(args) >= 3:
                return self.call(args[0], args[2])
            return self.opaque(name)
        if name in _UNSIZED_TENSORS:
            self.charge(_COST_TENSOR, lambda: name)
            return _Obj('opaque', name)
        if name in ('numpy.ndarray', *_RECONSTRUCT):
            return self.array(name, args)
        if name in _SCALAR:
            return self.scalar(name, args)
        if name == 'numpy.dtype':
            return self.dtype(args)
        if name.startswith('numpy.dtypes.'):
            return _Obj('dtype', name, itemsize=16)
        items = args[0] if len(args) == 1 else ()
        extra = len(items) * _COST_DICT_ITEM if isinstance(
            items, (tuple, list, dict, str)) else 0
        self.charge(_COST_CALL + extra, lambda: f'{name or "a call"}(...)')
        return _Obj('opaque', name)

    def opaque(self, name: str) -> _Obj:
        self.charge(_COST_CALL, lambda: f'{name or "a call"}(...)')
        return _Obj('opaque', name)

    def unsized(self, name: str, value: Any) -> _Refused:
        return _Refused(
            f'calls {name} with {_describe(value)}, whose size cannot be '
            'known before it is built')

    def bytes_call(self, name: str, args: tuple) -> _Obj:
        detail = _describe(args[0]) if args else ''
        if args and isinstance(args[0], (bool, int)):
            nbytes = max(int(args[0]), 0)  # zero-filled: sized by a number
            self.sized_call(name, nbytes, detail=detail)
            return _Obj('bytes', name, nbytes)
        if not args:
            nbytes = 0
        elif isinstance(args[0], str) and len(args) > 1:
            codec = args[1] if isinstance(args[1], str) else ''
            nbytes = len(args[0]) * (4 if _is_text_codec(codec) else 10)
        else:
            nbytes = _data_len(args[0])
            if nbytes is None:
                raise self.unsized(name, args[0])
        self.sized_call(name, 0, nbytes, detail)  # a copy of the file's data
        return _Obj('bytes', name, nbytes)

    def encode(self, args: tuple) -> Any:
        name = '_codecs.encode'
        codec = args[1] if len(args) > 1 else 'utf-8'
        if not isinstance(codec, str) or not _is_text_codec(codec):
            raise _Refused(
                f'calls {name} with the codec {codec!r}: only latin1 / '
                'utf-8 / ascii (what pickle writes for bytes) are read, '
                'other codecs can multiply a string\'s size call after '
                'call')
        if not args or not isinstance(args[0], str):
            return self.opaque(name)  # a text codec needs text
        self.sized_call(name, 0,
                        len(args[0]) * 4, f'<{len(args[0])} characters>')
        return args[0].encode(codec, 'surrogatepass')

    def legacy_constructor(self, name: str, args: tuple) -> _Obj:
        """``torch.FloatTensor(2, 3)`` / ``torch.UntypedStorage(n)``:
        ints are a size, a sequence or tensor is copied."""
        itemsize = 1 if name.endswith('UntypedStorage') else \
            _CLASS_ITEMSIZE.get(name, 8)
        detail = ', '.join(_describe(a) for a in args)
        if all(isinstance(a, (bool, int)) for a in args):
            numel = _count(list(args))  # uninitialised: sized by numbers
            self.sized_call(name, numel * itemsize, detail=detail)
        elif len(args) == 1 and _data_len(args[0]) is not None:
            numel = _data_len(args[0])
            itemsize = 1 if isinstance(args[0], _Obj) else itemsize
            if isinstance(args[0], tuple) and _count(args[0]) is not None:
                numel = max(numel, _count(args[0]))
            self.sized_call(name, 0, numel * itemsize, detail)
        else:
            raise self.unsized(name, args)
        nbytes = numel * itemsize
        kind = 'storage' if 'Storage' in name else 'tensor'
        return _Obj(kind, name, nbytes, itemsize, numel)

    def tensor_view(self, name: str, args: tuple) -> Any:
        """``_rebuild_tensor*(storage, offset, size, stride, ...)``: a view
        of ``storage``; its elements beyond the storage's bytes (a
        broadcast view that a copy would fill) are priced, and
        ``_rebuild_qtensor`` allocates its size before the view."""
        if len(args) < 4 or not (isinstance(args[0], _Obj)
                                 and args[0].kind == 'storage'):
            return self.opaque(name)
        storage, size = args[0], args[2]
        numel = _count(size)
        if numel is None:
            raise self.unsized(name, size)
        itemsize = storage.itemsize or 1
        if name == 'torch._utils._rebuild_tensor_v3' and len(args) > 6:
            itemsize = _torch_itemsize(args[6]) or itemsize
        nbytes = numel * itemsize
        copied = min(nbytes, storage.nbytes) if name.endswith(
            '_qtensor') else 0  # allocated, then set_ to the storage
        self.sized_call(
            name, max(nbytes - storage.nbytes, 0), copied,
            f'a storage of {format_bytes(storage.nbytes)}, size '
            f'{_describe(size)}')
        return _Obj('tensor', name, nbytes, itemsize, numel)

    def device_copy(self, name: str, args: tuple) -> Any:
        data = args[0] if args else None
        if not (isinstance(data, _Obj) and data.kind in ('tensor', 'array')):
            raise self.unsized(name, data)
        itemsize = _torch_itemsize(args[1]) if len(args) > 1 else None
        nbytes = data.numel * (itemsize or 16)
        self.sized_call(name, 0, nbytes, _describe(data))
        return _Obj('tensor', name, nbytes, itemsize, data.numel)

    def array(self, name: str, args: tuple) -> _Obj:
        """``numpy.ndarray(shape, dtype)`` / ``_reconstruct(cls, shape,
        dtype)`` allocate ``shape`` elements of ``dtype``."""
        if name == 'numpy.ndarray':  # ndarray(shape, dtype=float, ...)
            shape = args[0] if args else ()
            dtype = args[1] if len(args) > 1 else 'f8'
        else:  # _reconstruct(subtype, shape, dtype)
            shape = args[1] if len(args) > 1 else ()
            dtype = args[2] if len(args) > 2 else 'f8'
        numel = _count(shape)
        itemsize = _numpy_itemsize(dtype)
        if numel is None:
            raise self.unsized(name, shape)
        if itemsize is None:
            raise self.unsized(name, dtype)
        nbytes = numel * itemsize
        self.sized_call(
            name,
            nbytes,
            detail=f'shape {_describe(shape)}, itemsize '
            f'{itemsize}')
        return _Obj('array', name, nbytes, itemsize, numel)

    def scalar(self, name: str, args: tuple) -> _Obj:
        """``scalar(dtype[, data])``: without data numpy zero-fills an
        item of the dtype."""
        itemsize = _numpy_itemsize(args[0]) if args else 0
        if itemsize is None:
            raise self.unsized(name, args[0])
        data = (_data_len(args[1]) if len(args) > 1 else 0) or 0
        self.sized_call(name, max(itemsize - data, 0), data,
                        f'a dtype of itemsize {itemsize}')
        return _Obj('opaque', name, max(itemsize, data))

    def dtype(self, args: tuple) -> _Obj:
        self.charge(_COST_CALL, lambda: 'numpy.dtype')
        spec = args[0] if args else None
        return _Obj('dtype', 'numpy.dtype', itemsize=_numpy_itemsize(spec))

    def build(self, inst: Any, state: Any) -> None:
        """BUILD: a dtype's state may set its item size; a legacy tensor's
        state is ``set_(storage, offset, size, stride)``."""
        if not isinstance(inst, _Obj):
            return
        if inst.kind == 'dtype' and isinstance(state, tuple) and \
                len(state) > 5 and isinstance(state[5], int) and \
                inst.itemsize is not None:
            inst.itemsize = max(inst.itemsize, state[5])
        elif inst.kind == 'tensor' and isinstance(state, tuple) and \
                len(state) >= 3:
            view = self.tensor_view('torch.Tensor.set_',
                                    tuple(state) + (None, ) * 4)
            if isinstance(view, _Obj):
                inst.nbytes, inst.numel = view.nbytes, view.numel
        self.charge(_COST_CALL, 'BUILD')


def _is_text_codec(codec: str) -> bool:
    return codec.lower().replace('_', '-') in TEXT_CODECS


def _is_sizing(name: str) -> bool:
    return name in _TENSOR_CLASSES or name in _STORAGE_CLASSES or name in (
        'builtins.bytearray', 'numpy.ndarray', *_RECONSTRUCT, *_SCALAR)


def _describe(value: Any) -> str:
    if isinstance(value, _Obj):
        return f'an object made by {value.name or value.kind}'
    if isinstance(value, (str, bytes)) and len(value) > 24:
        return f'<{type(value).__name__} of {len(value)}>'
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _pickle_members(names: Sequence[str]) -> List[str]:
    return [
        n for n in names
        if n == 'data.pkl' or (n.endswith('/data.pkl') and n.count('/') == 1)
    ]


def _refusal(filename: str, where: str, reason: str,
             pickle_walk: bool) -> CheckpointLimitError:
    if pickle_walk:
        advice = ('A weight file needs none of this: the tensors\' data lie '
                  'in its storage records, the pickle holds their names and '
                  'shapes. If you trust the file, load it with --unsafe-load '
                  '(tools/train.py, tools/test.py, the demos) or inside '
                  'rsrefseg_mm.utils.allow_unsafe_load(), which skip this '
                  'check.')
    else:
        advice = ''
    return CheckpointLimitError(
        f'{filename}: refused before unpickling: {where} {reason}. {advice}'.
        rstrip())


def _zip_sizes(path: str) -> Dict[str, int]:
    """``record -> uncompressed bytes`` as Python's zipfile reads the
    central directory (no record is read)."""
    with zipfile.ZipFile(path) as archive:
        return {i.filename: i.file_size for i in archive.infolist()}


def _check_expansion(filename: str, sizes: Dict[str, int], disk: int,
                     max_expansion: float, reader: str) -> None:
    unpacked = sum(sizes.values())
    if unpacked <= max_expansion * disk:
        return
    largest = max(sizes, key=sizes.get)
    raise CheckpointLimitError(
        f'{filename}: refused before loading: its zip records unpack to '
        f'{format_bytes(unpacked)} ({reader}), {unpacked / max(disk, 1):.0f}'
        f' times its {format_bytes(disk)} on disk (largest: {largest}, '
        f'{format_bytes(sizes[largest])}), above max_checkpoint_expansion '
        f'= {max_expansion:g}. torch.save stores records uncompressed; a '
        'compressed checkpoint you trust loads with a higher limit: '
        f'max_checkpoint_expansion = {math.ceil(unpacked / max(disk, 1))} '
        'in the config (or --cfg-options; init_referring_model reads it '
        'too), or safe_torch_load(..., max_expansion=...).')


def _check_zip(filename: str, path: str, disk: int, max_expansion: float,
               scan_pickle: bool) -> None:
    _check_expansion(filename, _zip_sizes(path), disk, max_expansion,
                     'zip central directory')
    reader = torch._C.PyTorchFileReader(path)
    names = reader.get_all_records()
    sizes = {n: reader.get_record_size(n) for n in names}
    _check_expansion(filename, sizes, disk, max_expansion, 'torch\'s reader')
    if not scan_pickle or 'data.pkl' not in sizes:
        return  # torch.load reports a missing data.pkl
    records = {
        n[len('data/'):]: size
        for n, size in sizes.items() if n.startswith('data/')
    }
    walk = _PickleWalk(
        io.BytesIO(reader.get_record('data.pkl')), _Budget(disk), records)
    _walk(filename, walk, 'its data.pkl')


def _walk(filename: str, walk: _PickleWalk, where: str) -> Any:
    try:
        return walk.load()
    except _Refused as e:
        raise _refusal(filename, where, str(e), True) from None
    except UnpicklingError as e:
        raise MalformedPickleError(f'{where}: {e}') from e
    except (EOFError, IndexError, KeyError, TypeError, ValueError,
            AttributeError, struct.error, UnicodeDecodeError) as e:
        raise MalformedPickleError(
            f'{where} is not a valid pickle ({type(e).__name__}: '
            f'{str(e)[:80]})') from e


def _check_legacy(filename: str, path: str, disk: int) -> None:
    """A non-zip file: the pickles ``torch.load`` reads (magic number,
    protocol, system info, the object, its storage keys); the storages
    the object names are allocated as it is read, and stored raw after
    the pickles."""
    budget = _Budget(disk)
    with open(path, 'rb') as f:
        first = _walk(filename, _PickleWalk(f, budget, None), 'its pickle')
        if not (isinstance(first, int)
                and first == torch.serialization.MAGIC_NUMBER):
            return  # torch.load stops here: not a torch file
        for where in ('protocol', 'system info'):
            _walk(filename, _PickleWalk(f, budget, None), f'its {where}')
        walk = _PickleWalk(f, budget, None)
        _walk(filename, walk, 'its object pickle')
        if walk.claimed > disk:
            raise _refusal(
                filename, 'its storages',
                f'claim {format_bytes(walk.claimed)}, more than the file\'s '
                f'{format_bytes(disk)} (a legacy torch file stores them '
                'raw after its pickles)', True)
        _walk(filename, _PickleWalk(f, budget, None), 'its storage keys')


def check_checkpoint_size(path: Union[str, os.PathLike],
                          filename: Optional[str] = None,
                          max_expansion: Optional[float] = None,
                          scan_pickle: bool = True) -> None:
    """Refuse a checkpoint that claims more memory than its size allows,
    before ``torch.load`` reads it.

    ``.safetensors`` files (bounded by their format) and torch's oldest
    tar files (refused by ``weights_only=True``) are not checked.

    Args:
        path (str | PathLike): The local file.
        filename (str, optional): The name for messages. Defaults to
            ``path``.
        max_expansion (float, optional): How many times its size on disk
            a zip checkpoint's records may unpack to. Defaults to
            :func:`current_max_expansion`.
        scan_pickle (bool): Walk the pickles too (False for files the user
            trusts: the container is still checked). Defaults to True.

    Raises:
        CheckpointLimitError: The records unpack to more than
            ``max_expansion`` times the file's size, a storage claims more
            than its record (or a legacy file) holds, or the pickle would
            build more than :data:`MAX_SIZED_BYTES` of objects sized by
            its numbers / more than :data:`MAX_PICKLE_BYTES` of objects,
            calls a codec other than latin1 / utf-8 / ascii or sizes an
            object from something it cannot size. The message names the
            file, what was claimed and the limit.
        MalformedPickleError: The pickle cannot be read (``torch.load``
            would fail on it too).
        zipfile.BadZipFile, RuntimeError, OSError: The zip archive cannot
            be read.
    """
    path = os.fspath(path)
    filename = path if filename is None else filename
    max_expansion = current_max_expansion() if max_expansion is None else \
        check_max_expansion(max_expansion)
    if path.endswith('.safetensors'):
        return
    disk = osp.getsize(path)
    with open(path, 'rb') as f:
        is_zip = f.read(4) == b'PK\x03\x04'  # torch.load's own test
    if is_zip:
        _check_zip(filename, path, disk, max_expansion, scan_pickle)
    elif scan_pickle and not _is_tar(path):
        _check_legacy(filename, path, disk)


def _is_tar(path: str) -> bool:
    """Whether ``torch.load`` reads ``path`` as its oldest (tar) format,
    which it refuses under ``weights_only=True`` before reading a pickle
    (the same test: an uncompressed tar archive)."""
    try:
        with tarfile.open(path, mode='r:', format=tarfile.PAX_FORMAT):
            return True
    except (tarfile.TarError, OSError, ValueError):
        return False


def storage_keys(pickle_bytes: bytes) -> List[str]:
    """The storage keys a zip checkpoint's ``data.pkl`` names, read by the
    walk (nothing is imported or called; the memo is a dict, so a large
    memo index costs nothing).

    Raises:
        MalformedPickleError: The pickle cannot be read.
    """
    walk = _PickleWalk(
        io.BytesIO(pickle_bytes), _Budget(len(pickle_bytes)), None)
    _walk('data.pkl', walk, 'data.pkl')
    return list(walk.storages)


def legacy_magic(path: str) -> Tuple[bool, Optional[str]]:
    """Whether ``path`` starts with torch's legacy magic-number pickle,
    and why its pickles cannot all be read (None if they can).

    Returns:
        tuple[bool, str | None]: ``(is_legacy, problem)``.
    """
    budget = _Budget(osp.getsize(path))
    with open(path, 'rb') as f:
        try:
            first = _PickleWalk(f, budget, None).load()
        except Exception:  # any failure: not torch's legacy header
            return False, None
        if not (isinstance(first, int)
                and first == torch.serialization.MAGIC_NUMBER):
            return False, None
        for _ in range(4):
            try:
                _PickleWalk(f, budget, None).load()
            except Exception as e:  # anything a cut pickle raises
                return True, ('its pickles end early or are invalid '
                              f'({type(e).__name__}: {str(e)[:80]})')
    return True, None
