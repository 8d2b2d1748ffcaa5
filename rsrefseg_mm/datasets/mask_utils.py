"""Checking and decoding of referring-segmentation masks (COCO RLE /
polygons / files).

RRSIS-D (REFER layout) stores one mask per annotation as a list holding one
compressed COCO RLE (``[{'size': [h, w], 'counts': str}]``); other releases
use bytes counts, uncompressed RLE (``counts`` a list of ints) or polygons
(``[[x0, y0, x1, y1, ...], ...]``). pycocotools decodes all of them, but its
C code trusts what it is given: an RLE whose runs overrun its size writes
past the mask, and a mask's memory follows the size it states, not the file
it comes from (a 2 KB annotation of a 40,000 x 40,000 RLE asks for 1.6 GB,
a polygon with a vertex at 1e8 for gigabytes of boundary points). So every
segmentation is checked here before pycocotools sees it:

- its size: at most ``max_pixels`` (:data:`DEFAULT_MAX_MASK_PIXELS`) and,
  where the annotation states its image's size, within a tolerance of it;
- RLE counts: non-negative runs covering exactly ``h * w`` pixels
  (compressed strings are parsed chunk by chunk, in bounded memory);
- polygons: finite coordinates inside the mask (plus
  :data:`POLYGON_MARGIN` pixels) and a boundary at most
  ``max_pixels / POLYGON_BOUNDARY_DIVISOR`` pixels long (pycocotools'
  rasteriser holds ~40 bytes per pixel of boundary).

Errors are :class:`MaskDecodeError` (malformed) and :class:`MaskLimitError`
(beyond a bound); both are :class:`ValueError`, and the datasets add the
sample they came from.

A segmentation refers to one object or, for generalized referring, to
several: a list whose items are each one object's segmentation (an RLE dict,
a list of RLE dicts or a list of polygons), decoded as their union.
"""
import numbers
import reprlib
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

try:
    from pycocotools import mask as coco_mask
except ImportError:  # pragma: no cover - pycocotools is a runtime dependency
    coco_mask = None

#: Largest difference in pixels, per side (height and width separately),
#: between an image and its annotation's mask that is aligned rather than
#: refused. RRSIS-D as downloaded has JPEGs 1 px and 13 px off their 800x800
#: masks (800x801, 801x800, 787x800); 16 px covers them, while a wrong image
#: (another scene, a rotated or rescaled one) is off by far more.
DEFAULT_SIZE_TOLERANCE = 16
#: Largest mask (height x width) decoded by default: 100 MP, a 10,000 x
#: 10,000 scene (RRSIS-D's masks are 800 x 800 = 0.64 MP). A decoded mask
#: takes 1 byte per pixel (2 while it is made contiguous).
DEFAULT_MAX_MASK_PIXELS = 100_000_000
#: Highest ceiling: pycocotools reads a compressed run with 32-bit shifts,
#: exactly up to 6 characters (30 bits, the sign included), which hold the
#: runs and run differences of masks of at most 2**29 - 1 pixels.
MAX_MASK_PIXELS_LIMIT = 2**29 - 1
#: Pixels a polygon vertex may lie outside its mask (annotation tools round
#: vertices on the border outwards); pycocotools clips them.
POLYGON_MARGIN = 16
#: A segmentation's polygons may be at most ``max_pixels / 20`` pixels long
#: in all (5 M pixels at the default ceiling: ~200 MB in pycocotools'
#: rasteriser, which holds ~40 bytes per pixel of boundary).
POLYGON_BOUNDARY_DIVISOR = 20
#: Characters of one run in a compressed RLE string (5 bits each; see
#: :data:`MAX_MASK_PIXELS_LIMIT`).
MAX_RLE_RUN_CHARS = 6
#: Characters of a compressed RLE string parsed at a time.
_RLE_CHUNK = 1 << 20

_short = reprlib.Repr()
_short.maxlist = _short.maxtuple = _short.maxdict = 4
_short.maxlevel = 3
_short.maxstring = _short.maxother = 60


def short_repr(value: Any) -> str:
    """A bounded repr for messages (a huge annotation stays short)."""
    return _short.repr(value)


class MaskDecodeError(ValueError):
    """A mask annotation is malformed (the message says why)."""


class MaskLimitError(MaskDecodeError):
    """A mask annotation exceeds a bound: refused before it is decoded."""


def mask_error_kind(error: Exception) -> str:
    """How messages introduce a refused segmentation."""
    return 'segmentation refused' if isinstance(
        error, MaskLimitError) else 'malformed segmentation'


def _require_pycocotools() -> None:
    if coco_mask is None:  # pragma: no cover
        raise ImportError('pycocotools is required to decode RLE / polygon '
                          'masks: pip install pycocotools')


def check_max_pixels(max_pixels: Any) -> int:
    """Validate a ``max_pixels`` / ``max_mask_pixels`` argument.

    Raises:
        ValueError: Not an int in ``[1, MAX_MASK_PIXELS_LIMIT]``.
    """
    if isinstance(max_pixels, bool) or not isinstance(
            max_pixels, numbers.Integral) or not \
            1 <= max_pixels <= MAX_MASK_PIXELS_LIMIT:
        raise ValueError(f'max_mask_pixels must be an int in [1, '
                         f'{MAX_MASK_PIXELS_LIMIT:,}] (what pycocotools '
                         f'reads exactly), got {max_pixels!r}')
    return int(max_pixels)


def _is_int(value: Any) -> bool:
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, bool))


# ----------------------------------------------------------- RLE strings
def _rle_string_runs(data: bytes) -> Iterator[np.ndarray]:
    """Run lengths of a compressed COCO RLE string, chunk by chunk.

    A NumPy port of ``rleFrString`` from the COCO API: every character
    holds 5 bits of a run, 0x20 marks a continuation, 0x10 in the last
    character the sign; from the fourth run on, a run is stored as its
    difference to the run two before. Memory is bounded by
    :data:`_RLE_CHUNK` characters whatever the string's length.

    Args:
        data (bytes): The compressed counts.

    Yields:
        np.ndarray: int64 run lengths of the next chunk, as pycocotools
        reads them (values outside ``[0, 2**32)`` are yielded unchanged:
        the caller refuses them, since pycocotools would wrap them).

    Raises:
        MaskDecodeError: A character outside ``'0'..'o'``, a run longer
            than :data:`MAX_RLE_RUN_CHARS` characters or a truncated run.
    """
    n = len(data)
    index, start = 0, 0  # run index and character offset of the chunk
    tails = [0, 0]  # last run of the even (from 2) and odd chains
    while start < n:
        stop = min(start + _RLE_CHUNK, n)
        c = np.frombuffer(data, np.uint8, stop - start, start)
        c = c.astype(np.int64) - 48
        bad = np.flatnonzero((c < 0) | (c >= 64))
        if bad.size:
            pos = start + int(bad[0])
            raise MaskDecodeError(
                f'invalid character {chr(data[pos])!r} at {pos} in '
                'compressed RLE')
        ends = np.flatnonzero((c & 0x20) == 0)  # last character of a run
        if stop < n:
            if ends.size == 0:
                raise MaskDecodeError(
                    f'a compressed RLE run longer than {MAX_RLE_RUN_CHARS} '
                    f'characters at {start}')
            c = c[:ends[-1] + 1]
        elif ends.size == 0 or ends[-1] != c.size - 1:
            raise MaskDecodeError('truncated compressed RLE string')
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        if lengths.max() > MAX_RLE_RUN_CHARS:
            pos = start + int(starts[np.argmax(lengths)])
            raise MaskDecodeError(
                f'a compressed RLE run longer than {MAX_RLE_RUN_CHARS} '
                f'characters at {pos}')
        shift = np.arange(c.size) - np.repeat(starts, lengths)
        runs = np.add.reduceat((c & 0x1F) << (5 * shift), starts)
        negative = (c[ends] & 0x10) != 0
        runs[negative] -= np.left_shift(1, 5 * lengths[negative])
        g = index + np.arange(runs.size)
        for parity, first in ((0, 2), (1, 1)):  # run g adds run g - 2
            chain = (g % 2 == parity) & (g >= first)
            if chain.any():
                runs[chain] = tails[parity] + np.cumsum(runs[chain])
                tails[parity] = int(runs[chain][-1])
        yield runs
        index += runs.size
        start += c.size


def rle_string_to_counts(counts: str) -> List[int]:
    """Parse a COCO compressed-RLE string into its run lengths.

    Args:
        counts (str): Compressed counts (characters ``'0'``..``'o'``).

    Returns:
        list[int]: Run lengths, alternating background / foreground, starting
        with background.

    Raises:
        MaskDecodeError: On a character outside the alphabet, a run longer
            than :data:`MAX_RLE_RUN_CHARS` characters or a truncated run.
    """
    data = _ascii(counts)
    return [int(v) for runs in _rle_string_runs(data) for v in runs]


def _ascii(counts: Any) -> bytes:
    if isinstance(counts, (bytes, bytearray)):
        return bytes(counts)
    try:
        return counts.encode('ascii')
    except UnicodeEncodeError as e:
        raise MaskDecodeError(f'compressed RLE counts are not ASCII: {e}')


def _check_runs(runs: Iterator[np.ndarray], h: int, w: int) -> None:
    """Refuse negative or 32-bit-overflowing runs and a wrong total."""
    total = 0
    for chunk in runs:
        if chunk.size == 0:
            continue
        if chunk.min() < 0:
            raise MaskDecodeError('RLE has a negative run length')
        if chunk.max() > h * w:
            raise MaskDecodeError(f'RLE has a run of {int(chunk.max())} '
                                  f'pixels, more than its size {h}x{w} has')
        total += int(chunk.sum())
        if total > h * w:
            break
    if total > h * w:
        raise MaskDecodeError(f'RLE runs cover more than the {h * w} pixels '
                              f'of its size {h}x{w}')
    if total != h * w:
        raise MaskDecodeError(f'RLE runs cover {total} pixels but its size '
                              f'{h}x{w} has {h * w}')


# ------------------------------------------------------------ structure
def _check_size(size: Any, max_pixels: int) -> Tuple[int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_int(s) for s in size) or min(size) <= 0):
        raise MaskDecodeError(f'RLE "size" must be [height, width] with '
                              f'positive ints, got {short_repr(size)}')
    h, w = int(size[0]), int(size[1])
    if h * w > max_pixels:
        raise MaskLimitError(
            f'the mask is {h}x{w} = {h * w:,} pixels, more than '
            f'max_mask_pixels={max_pixels:,} (refused before decoding; '
            'raise max_mask_pixels for larger scenes)')
    return h, w


def _is_flat(value: Any) -> bool:
    """A list of scalars (a polygon), not of lists or dicts."""
    return isinstance(value, (list, tuple)) and not any(
        isinstance(v, (list, tuple, dict)) for v in value)


def _is_object(value: Any) -> bool:
    """One object's segmentation: an RLE dict, a non-empty list of RLE
    dicts or a non-empty list of polygons."""
    if isinstance(value, dict):
        return True
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(isinstance(v, dict)
               for v in value) or all(_is_flat(v) for v in value)


def split_objects(segmentation: Any) -> List[Any]:
    """The objects a segmentation refers to.

    Args:
        segmentation: One object's segmentation (an RLE dict, a list of RLE
            dicts, a list of polygons) or a list of such (several objects,
            generalized referring).

    Returns:
        list: One segmentation per object.

    Raises:
        MaskDecodeError: For any other structure.
    """
    if _is_object(segmentation):
        return [segmentation]
    if isinstance(segmentation, (list, tuple)) and segmentation and all(
            _is_object(s) for s in segmentation):
        return list(segmentation)
    raise MaskDecodeError(
        'segmentation must be an RLE dict, a non-empty list of RLE dicts, a '
        'non-empty list of polygons, or a list of those (several objects), '
        f'got {type(segmentation).__name__} {short_repr(segmentation)}')


def _parts(obj: Any) -> Tuple[List[dict], List[Any]]:
    """(RLE dicts, polygons) of one object."""
    if isinstance(obj, dict):
        return [obj], []
    if isinstance(obj[0], dict):
        return list(obj), []
    return [], list(obj)


def _check_rle(rle: dict, max_pixels: int,
               check_runs: bool) -> Tuple[Tuple[int, int], Any]:
    """Check one RLE dict; returns its size and its counts (str counts as
    bytes)."""
    if 'size' not in rle or 'counts' not in rle:
        raise MaskDecodeError(f'an RLE needs "size" and "counts", got keys '
                              f'{short_repr(sorted(map(str, rle)))}')
    h, w = _check_size(rle['size'], max_pixels)
    counts = rle['counts']
    if isinstance(counts, (str, bytes, bytearray)):
        data = _ascii(counts)
        # a run takes 1..6 characters and a mask has at most h * w + 1
        if not data or len(data) > MAX_RLE_RUN_CHARS * (h * w + 1):
            raise MaskDecodeError(
                f'compressed RLE counts of {len(data):,} characters cannot '
                f'describe a {h}x{w} mask')
        if check_runs:
            _check_runs(_rle_string_runs(data), h, w)
        return (h, w), data
    if isinstance(counts, (list, tuple)):
        try:
            runs = np.asarray(counts)
        except (ValueError, OverflowError):  # ragged, or ints beyond int64
            runs = np.asarray([], np.float64)
        if runs.ndim != 1 or runs.dtype.kind not in 'iu' or not runs.size:
            raise MaskDecodeError('uncompressed RLE counts must be a '
                                  'non-empty list of integers')
        _check_runs(iter([runs.astype(np.int64)]), h, w)
        return (h, w), runs.astype(np.uint32)
    raise MaskDecodeError(f'RLE "counts" must be str, bytes or a list of '
                          f'ints, got {type(counts).__name__}')


def _check_polygon(poly: Any) -> np.ndarray:
    if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
        raise MaskDecodeError('a polygon must be a flat list [x0, y0, x1, y1, '
                              '...] with at least 3 points')
    try:
        coords = np.asarray(poly)
    except (ValueError, OverflowError):  # ragged
        coords = np.asarray([], object)
    if coords.ndim != 1 or coords.dtype.kind not in 'iuf':
        raise MaskDecodeError('polygon coordinates must be numbers')
    coords = coords.astype(np.float64).reshape(-1, 2)
    if not np.isfinite(coords).all():
        raise MaskDecodeError('polygon coordinates must be finite')
    return coords


def _check_polygons(polys: Sequence[Any], size: Optional[Tuple[int, int]],
                    max_pixels: int) -> List[List[float]]:
    """Check polygons (coordinates, extent, boundary length)."""
    limit = max_pixels // POLYGON_BOUNDARY_DIVISOR
    boundary = 0.0
    checked = []
    for poly in polys:
        coords = _check_polygon(poly)
        if size is not None:
            h, w = size
            lo, hi = coords.min(axis=0), coords.max(axis=0)
            if lo.min() < -POLYGON_MARGIN or hi[0] > w + POLYGON_MARGIN or \
                    hi[1] > h + POLYGON_MARGIN:
                raise MaskLimitError(
                    f'a polygon spans x {lo[0]:g}..{hi[0]:g}, y '
                    f'{lo[1]:g}..{hi[1]:g}, outside its {h}x{w} mask '
                    f'(+{POLYGON_MARGIN} px)')
        edges = np.abs(np.diff(coords, axis=0, append=coords[:1]))
        boundary += float(edges.max(axis=1).sum()) + len(coords)
        if boundary > limit:
            raise MaskLimitError(
                f'the polygons are more than {limit:,} pixels long '
                f'(max_mask_pixels={max_pixels:,} / '
                f'{POLYGON_BOUNDARY_DIVISOR}; refused before rasterising)')
        checked.append(coords.ravel().tolist())
    return checked


def stated_size(height: Any,
                width: Any,
                max_pixels: int = DEFAULT_MAX_MASK_PIXELS
                ) -> Optional[Tuple[int, int]]:
    """Check an annotation's stated image size (e.g. an ``instances.json``
    image entry's ``height`` / ``width``).

    Args:
        height: The stated height, or None.
        width: The stated width, or None.
        max_pixels (int): Largest mask, ``h * w``.

    Returns:
        tuple[int, int] | None: ``(height, width)``; None when neither is
        stated.

    Raises:
        MaskDecodeError: Not two positive ints.
        MaskLimitError: More than ``max_pixels``.
    """
    if height is None and width is None:
        return None
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
        raise MaskDecodeError(
            f'the stated image size must be positive ints, got height='
            f'{short_repr(height)}, width={short_repr(width)}')
    h, w = int(height), int(width)
    if h * w > max_pixels:
        raise MaskLimitError(
            f'the stated image size {h}x{w} = {h * w:,} pixels is more than '
            f'max_mask_pixels={max_pixels:,} (refused before decoding; raise '
            'max_mask_pixels for larger scenes)')
    return h, w


def validate_segmentation(
        segmentation: Any,
        height: Optional[int] = None,
        width: Optional[int] = None,
        max_pixels: int = DEFAULT_MAX_MASK_PIXELS,
        size_tolerance: Optional[int] = None,
        check_runs: bool = False) -> Optional[Tuple[int, int]]:
    """Check a segmentation against its bounds without decoding it.

    Cheap enough to run on every annotation when a dataset is built:
    structure, sizes (at most ``max_pixels``; RLE sizes within
    ``size_tolerance`` of the stated image size), uncompressed RLE runs,
    compressed RLE string lengths and polygons (see the module docstring).
    ``check_runs=True`` also parses compressed RLE strings (what
    :func:`decode_segmentation` does first).

    Args:
        segmentation: See :func:`split_objects`.
        height (int, optional): Stated image height (e.g. the
            ``instances.json`` image entry); polygons are rasterised at it
            when there is no RLE.
        width (int, optional): Stated image width.
        max_pixels (int): Largest mask, ``h * w``. Defaults to
            :data:`DEFAULT_MAX_MASK_PIXELS`.
        size_tolerance (int, optional): Largest difference in pixels per
            side between an RLE ``size`` and ``(height, width)``; None does
            not compare them.
        check_runs (bool): Parse compressed RLE strings too. Defaults to
            False.

    Returns:
        tuple[int, int] | None: The size the segmentation decodes at: its
        RLE ``size``, else ``(height, width)``; None for polygons without a
        stated size (they decode at the image's size).

    Raises:
        MaskDecodeError: A malformed segmentation.
        MaskLimitError: A segmentation beyond a bound.
    """
    size, _, _ = _check_segmentation(segmentation, height, width, max_pixels,
                                     size_tolerance, check_runs)
    return size


def _check_segmentation(segmentation, height, width, max_pixels,
                        size_tolerance, check_runs):
    """:func:`validate_segmentation`, returning what decoding needs too:
    (size, RLE dicts with checked counts, checked polygons)."""
    max_pixels = check_max_pixels(max_pixels)
    stated = stated_size(height, width, max_pixels)
    rles, polys = [], []
    for obj in split_objects(segmentation):
        obj_rles, obj_polys = _parts(obj)
        rles += obj_rles
        polys += obj_polys
    checked, sizes = [], set()
    for rle in rles:
        size, counts = _check_rle(rle, max_pixels, check_runs)
        sizes.add(size)
        checked.append((size, counts))
    if len(sizes) > 1:
        raise MaskDecodeError(f'RLE parts have different sizes '
                              f'{sorted(sizes)}')
    size = next(iter(sizes)) if sizes else stated
    if sizes and stated is not None and size_tolerance is not None:
        dh, dw = size[0] - stated[0], size[1] - stated[1]
        if max(abs(dh), abs(dw)) > size_tolerance:
            raise MaskLimitError(
                f'the RLE size {size[0]}x{size[1]} differs from the stated '
                f'image size {stated[0]}x{stated[1]} by ({dh:+d}, {dw:+d}) '
                f'px, more than size_tolerance={size_tolerance}')
    polys = _check_polygons(polys, size, max_pixels) if polys else []
    return size, checked, polys


def decode_segmentation(
        segmentation: Any,
        height: Optional[int] = None,
        width: Optional[int] = None,
        max_pixels: int = DEFAULT_MAX_MASK_PIXELS) -> np.ndarray:
    """Decode a COCO-style segmentation into a binary mask.

    Everything is checked first (:func:`validate_segmentation` with
    ``check_runs=True``); several parts or objects are merged by union.

    Args:
        segmentation: Compressed RLE (``counts`` str or bytes), uncompressed
            RLE (``counts`` list of ints), a list of such dicts, a list of
            polygons ``[[x0, y0, x1, y1, ...], ...]``, or a list of those
            (several objects).
        height (int, optional): Image height; required for polygons
            without an RLE part.
        width (int, optional): Image width.
        max_pixels (int): Largest mask, ``h * w``. Defaults to
            :data:`DEFAULT_MAX_MASK_PIXELS`.

    Returns:
        np.ndarray: (H, W) uint8 mask with values in {0, 1}.

    Raises:
        MaskDecodeError: A malformed segmentation (message says why).
        MaskLimitError: A segmentation beyond a bound.
    """
    _require_pycocotools()
    size, rles, polys = _check_segmentation(segmentation, height, width,
                                            max_pixels, None, True)
    if size is None:
        raise MaskDecodeError('polygon masks need the image height and width')
    h, w = size
    encoded = []
    for (rh, rw), counts in rles:
        if isinstance(counts, np.ndarray):  # uncompressed -> compressed
            encoded.append(
                coco_mask.frPyObjects(
                    dict(size=[rh, rw], counts=counts), rh, rw))
        else:
            encoded.append(dict(size=[rh, rw], counts=counts))
    if polys:
        encoded += coco_mask.frPyObjects(polys, h, w)
    merged = coco_mask.merge(encoded) if len(encoded) > 1 else encoded[0]
    return np.ascontiguousarray(coco_mask.decode(merged))


def segmentation_size(
        segmentation: Any,
        height: Optional[int] = None,
        width: Optional[int] = None,
        max_pixels: int = DEFAULT_MAX_MASK_PIXELS
) -> Optional[Tuple[int, int]]:
    """The (height, width) a segmentation decodes at, without decoding it.

    Args:
        segmentation: As accepted by :func:`decode_segmentation`.
        height (int, optional): Annotated image height (polygons).
        width (int, optional): Annotated image width (polygons).
        max_pixels (int): Largest mask. Defaults to
            :data:`DEFAULT_MAX_MASK_PIXELS`.

    Returns:
        tuple[int, int] | None: The RLE ``size``, or ``(height, width)``
        for polygons; None for polygons without them (they decode at the
        image size).

    Raises:
        MaskDecodeError / MaskLimitError: See :func:`validate_segmentation`.
    """
    return validate_segmentation(segmentation, height, width, max_pixels)


def encode_mask(mask: np.ndarray, as_str: bool = True) -> dict:
    """Encode a binary (H, W) mask as compressed COCO RLE.

    Args:
        mask (np.ndarray): (H, W) array, nonzero = foreground.
        as_str (bool): Return ``counts`` as str (JSON-serialisable, the
            RRSIS-D convention) instead of bytes. Defaults to True.

    Returns:
        dict: ``{'size': [h, w], 'counts': str | bytes}``.
    """
    _require_pycocotools()
    rle = coco_mask.encode(np.asfortranarray((mask > 0).astype(np.uint8)))
    counts = rle['counts']
    if as_str:
        counts = counts.decode('ascii')
    return dict(size=[int(rle['size'][0]), int(rle['size'][1])], counts=counts)


def binarize_mask_file(mask: np.ndarray,
                       mode: str = 'auto',
                       ignore_index: int = 255,
                       source: str = '') -> np.ndarray:
    """Turn a mask read from an image file into {0, 1, ignore_index}.

    Modes:

    - ``'binary'``: every nonzero pixel is the target (0/255 PNG/TIFF masks,
      as in the RefSegRS and RISBench releases).
    - ``'label'``: 0 background, 1 target, ``ignore_index`` ignored; any other
      value is an error.
    - ``'auto'`` (default): ``'label'`` when the values are a subset of
      {0, 1, ignore_index} and contain 1; otherwise ``'binary'``. So a 0/255
      mask is read as background/target and a 0/1/255 mask keeps its 255
      pixels as ignore.

    Args:
        mask (np.ndarray): (H, W) or (H, W, C) integer array.
        mode (str): ``'auto'``, ``'binary'`` or ``'label'``.
        ignore_index (int): Ignore value. Defaults to 255.
        source (str): File name used in error messages.

    Returns:
        np.ndarray: (H, W) uint8.
    """
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.ndim != 2:
        raise ValueError(f'mask file {source} has shape {mask.shape}; '
                         'expected (H, W) or (H, W, C)')
    if mode not in ('auto', 'binary', 'label'):
        raise ValueError(f"mode must be 'auto', 'binary' or 'label', got "
                         f'{mode!r}')
    values = np.unique(mask)
    if mode == 'auto':
        label_like = set(values.tolist()) <= {0, 1, ignore_index}
        mode = 'label' if label_like and 1 in values else 'binary'
    if mode == 'binary':
        return (mask > 0).astype(np.uint8)
    bad = set(values.tolist()) - {0, 1, ignore_index}
    if bad:
        raise ValueError(f'mask file {source} has values {sorted(bad)[:10]} '
                         f'outside {{0, 1, {ignore_index}}} (mode="label")')
    return mask.astype(np.uint8)


def align_mask(mask: np.ndarray, shape: Tuple[int, int],
               pad_value: int) -> np.ndarray:
    """Crop or pad a mask to ``shape``, keeping its top-left origin.

    Rows / columns beyond ``shape`` are dropped; missing ones (at the bottom
    / right) are filled with ``pad_value``. Pixel ``(y, x)`` of the result is
    pixel ``(y, x)`` of ``mask`` wherever both exist.

    Args:
        mask (np.ndarray): (H, W) mask.
        shape (tuple[int, int]): Target (height, width).
        pad_value (int): Value of the added pixels (e.g. the ignore index:
            they carry no annotation).

    Returns:
        np.ndarray: (height, width) array of ``mask``'s dtype.
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.full((h, w), pad_value, dtype=mask.dtype)
    mh, mw = min(h, mask.shape[0]), min(w, mask.shape[1])
    out[:mh, :mw] = mask[:mh, :mw]
    return out
