"""Reading annotation files within bounds, with errors that name them.

Annotation files come from downloads and mirrors, so what they hold is
checked before it is used: a file over ``max_bytes`` is not read, JSON is
parsed without letting deep nesting reach a recursive reader, values of the
wrong type are refused by name (file, ref / annotation id, what was
expected) instead of failing later in an ``AttributeError``, and an image
file name must stay inside the image folder.
"""
import json
import numbers
import os
import posixpath
from typing import Any, Optional, Tuple, Type, Union

import mmengine.fileio as fileio
import numpy as np
from mmengine.fileio import LocalBackend

from ..utils.safe_pickle import MAX_DEPTH
from .mask_utils import short_repr

#: Largest annotation file read (refs pickle, instances.json, jsonl):
#: 256 MiB, far above the REFER-style releases (RRSIS-D's files are a few
#: MB), while parsing a file takes up to ~25 bytes of memory per byte of
#: JSON (a list of empty lists).
DEFAULT_MAX_ANNOTATION_BYTES = 256 * 2**20


class AnnotationError(ValueError):
    """An annotation file holds something its reader does not accept (the
    message names the file, the ref / annotation and what was expected)."""


class AnnotationLimitError(AnnotationError):
    """An annotation file exceeds a bound (its size, its nesting)."""


class ImagePathError(AnnotationError):
    """An image file name that would resolve outside the image folder."""


def check_max_bytes(max_bytes: Any) -> int:
    """Validate a ``max_annotation_bytes`` argument (an int >= 1)."""
    if isinstance(max_bytes, bool) or not isinstance(
            max_bytes, numbers.Integral) or max_bytes < 1:
        raise ValueError(f'max_annotation_bytes must be an int >= 1, got '
                         f'{max_bytes!r}')
    return int(max_bytes)


def read_annotation_bytes(path: str,
                          what: str,
                          max_bytes: int = DEFAULT_MAX_ANNOTATION_BYTES,
                          backend_args: Optional[dict] = None,
                          hint: str = '') -> bytes:
    """Read an annotation file of at most ``max_bytes``.

    A local file's size is checked before it is read; other backends
    download it first.

    Args:
        path (str): The file (any mmengine file backend).
        what (str): What it is, for messages (``'instances file'``).
        max_bytes (int): Largest size read. Defaults to
            :data:`DEFAULT_MAX_ANNOTATION_BYTES`.
        backend_args (dict, optional): mmengine file backend arguments.
        hint (str): Appended to the not-found message.

    Returns:
        bytes: The content.

    Raises:
        FileNotFoundError: The file does not exist.
        AnnotationLimitError: It is larger than ``max_bytes``.
    """
    max_bytes = check_max_bytes(max_bytes)
    backend = fileio.get_file_backend(path, backend_args=backend_args)
    try:
        if isinstance(backend, LocalBackend):
            size = os.path.getsize(path)
            if size > max_bytes:
                raise _too_large(path, what, size, max_bytes)
        raw = backend.get(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'{what} {path} not found.{hint}') from None
    if len(raw) > max_bytes:
        raise _too_large(path, what, len(raw), max_bytes)
    return raw


def _too_large(path: str, what: str, size: int,
               max_bytes: int) -> AnnotationLimitError:
    return AnnotationLimitError(
        f'{what} {path} is {size:,} bytes, more than max_annotation_bytes='
        f'{max_bytes:,}; raise max_annotation_bytes if the file is genuine')


def json_depth(raw: Union[bytes, str], chunk: int = 1 << 20) -> int:
    """The deepest nesting of ``[`` / ``{`` in valid JSON text.

    Brackets inside strings do not nest: a quote opens or closes a string
    unless an odd number of backslashes precedes it (outside strings valid
    JSON has no backslash). The text is scanned with NumPy ``chunk`` bytes
    at a time, so memory stays within a few chunks whatever its length.

    Args:
        raw (bytes | str): JSON text that parses.
        chunk (int): Bytes scanned at a time.

    Returns:
        int: The nesting depth (0 for a scalar).
    """
    data = raw.encode('utf-8') if isinstance(raw, str) else bytes(raw)
    depth = deepest = 0
    in_string = False
    backslashes = 0  # run of backslashes ending the previous chunk
    for start in range(0, len(data), chunk):
        a = np.frombuffer(data, np.uint8, min(chunk, len(data) - start), start)
        pos = np.arange(a.size, dtype=np.int32)
        # length of the run of backslashes just before each byte
        last_other = np.maximum.accumulate(
            np.where(a != 0x5C, pos, np.int32(-1)))
        run = np.empty(a.size, np.int32)
        run[0] = backslashes % 2
        run[1:] = pos[:-1] - last_other[:-1]
        run[1:][last_other[:-1] == -1] += backslashes % 2
        quote = (a == 0x22) & (run % 2 == 0)
        # inside a string: an odd number of open/close quotes up to here
        inside = (np.cumsum(quote, dtype=np.int32) + in_string) % 2 == 1
        step = np.zeros(a.size, np.int8)
        step[(a == 0x5B) | (a == 0x7B)] = 1  # [ {
        step[(a == 0x5D) | (a == 0x7D)] = -1  # ] }
        step[inside] = 0
        levels = np.cumsum(step, dtype=np.int32)
        deepest = max(deepest, depth + int(levels.max()))
        depth += int(levels[-1])
        in_string = bool(inside[-1])
        backslashes = int(a.size - 1 - last_other[-1])
        if last_other[-1] == -1:
            backslashes += int(run[0])
    return deepest


def _brackets(raw: Union[bytes, str]) -> int:
    """Opening brackets in JSON text (an upper bound of its depth)."""
    if isinstance(raw, str):
        return raw.count('[') + raw.count('{')
    return raw.count(b'[') + raw.count(b'{')


def load_json(raw: Union[bytes, str],
              source: str,
              max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON, refusing nesting deeper than annotations ever have.

    Python's JSON parser recurses once per nesting level: input nested
    deeper than the interpreter's recursion limit ends in a
    :class:`RecursionError`, turned here into a named error; shallower
    input deeper than ``max_depth`` is refused too (:func:`json_depth`),
    so no later reader recurses deep.

    Args:
        raw (bytes | str): The JSON text.
        source (str): File (and line) for messages.
        max_depth (int): Deepest nesting accepted. Defaults to
            :data:`~rsrefseg_mm.utils.safe_pickle.MAX_DEPTH` (100; a
            REFER instances file nests 5 deep).

    Returns:
        Any: The parsed value.

    Raises:
        AnnotationError: Not valid JSON.
        AnnotationLimitError: Nested deeper than ``max_depth``.
    """
    too_deep = AnnotationLimitError(
        f'{source}: JSON nested more than {max_depth} deep; annotation data '
        'never is (refused)')
    try:
        data = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError(f'{source}: invalid JSON: {e}') from None
    if isinstance(data, (list, dict)) and _brackets(raw) > max_depth and \
            json_depth(raw) > max_depth:
        raise too_deep
    return data


def expect(value: Any, types: Union[Type, Tuple[Type, ...]], where: str,
           what: str) -> Any:
    """Return ``value`` if it is one of ``types``, else raise naming it.

    Args:
        value: The value read.
        types (type | tuple[type]): Accepted types (``bool`` is not an
            ``int`` here).
        where (str): File and ref / annotation, for the message.
        what (str): What the value should be (``'"sentences", a list of
            dicts'``).

    Returns:
        Any: ``value``.

    Raises:
        AnnotationError: Naming ``where``, ``what`` and what was found.
    """
    types = types if isinstance(types, tuple) else (types, )
    if isinstance(
            value,
            types) and not (isinstance(value, bool) and bool not in types):
        return value
    raise AnnotationError(f'{where}: expected {what}, got '
                          f'{type(value).__name__} {short_repr(value)}')


def is_id(value: Any) -> bool:
    """An annotation / image / ref id: an int (NumPy ints included, bools
    not) or a string."""
    if type(value) in (int, str):  # fast path: ABC checks cost ~3 us
        return True
    return isinstance(value, str) or (isinstance(value, numbers.Integral)
                                      and not isinstance(value, bool))


def optional_id(value: Any, where: str, what: str) -> Any:
    """Return an id (see :func:`is_id`) or None; raise for anything else.

    Args:
        value: The value read (``ref_id``, ``image_id``, ``sent_id``,
            ``category_id``).
        where (str): File and ref, for the message.
        what (str): The key, for the message.

    Raises:
        AnnotationError: Naming ``where``, the key and what was found.
    """
    if value is None or is_id(value):
        return value
    raise AnnotationError(f'{where}: expected "{what}", an int or str id, '
                          f'got {type(value).__name__} {short_repr(value)}')


def image_file_name(file_name: Any, where: str) -> str:
    """Check an image file name read from an annotation.

    It must be a relative path that stays inside the image folder: not
    absolute (``/``, ``\\``, a drive ``C:``, a URL ``scheme://``), no
    ``..`` component, no NUL character.

    Args:
        file_name: The value read (``file_name`` of a ref, image entry or
            jsonl line).
        where (str): File and ref, for the message.

    Returns:
        str: ``file_name``.

    Raises:
        AnnotationError: Not a non-empty string.
        ImagePathError: A path that would resolve outside the folder.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise AnnotationError(f'{where}: expected "file_name", the image '
                              f'file name, got {short_repr(file_name)}')
    parts = file_name.replace('\\', '/').split('/')
    if ('\0' in file_name or posixpath.isabs(file_name.replace('\\', '/'))
            or '..' in parts or ':' in parts[0]):
        raise ImagePathError(
            f'{where}: the image file name {short_repr(file_name)} is not a '
            'relative path inside the image folder (absolute, a drive or '
            'URL, or with ".."); refused')
    return file_name
