"""Decoding of referring-segmentation masks (COCO RLE / polygons / files).

RRSIS-D (REFER layout) stores one mask per annotation as a list holding one
compressed COCO RLE (``[{'size': [h, w], 'counts': str}]``); other releases
use bytes counts, uncompressed RLE (``counts`` a list of ints) or polygons
(``[[x0, y0, x1, y1, ...], ...]``). pycocotools decodes all of them, but its C
decoder does not check that the runs fit the declared size (a malformed RLE
overruns memory), so every RLE is validated here before it reaches
pycocotools, and every error names the sample it came from.
"""
from typing import Any, List, Optional, Tuple

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


class MaskDecodeError(ValueError):
    """A mask annotation could not be decoded (names the sample)."""


def _require_pycocotools() -> None:
    if coco_mask is None:  # pragma: no cover
        raise ImportError('pycocotools is required to decode RLE / polygon '
                          'masks: pip install pycocotools')


def rle_string_to_counts(counts: str) -> List[int]:
    """Parse a COCO compressed-RLE string into its run lengths.

    A pure-Python port of ``rleFrString`` from the COCO API, used to validate
    an RLE before it is handed to pycocotools.

    Args:
        counts (str): Compressed counts (characters ``'0'``..``'o'``).

    Returns:
        list[int]: Run lengths, alternating background / foreground, starting
        with background.

    Raises:
        ValueError: On a character outside the alphabet or a truncated run.
    """
    runs: List[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError('truncated compressed RLE string')
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(
                    f'invalid character {counts[pos]!r} in compressed RLE')
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and (c & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_size(size: Any) -> Tuple[int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) for s in size)
            or min(size) <= 0):
        raise ValueError(f'RLE "size" must be [height, width] with positive '
                         f'ints, got {size!r}')
    return int(size[0]), int(size[1])


def _validate_rle(rle: dict) -> dict:
    """Validate one RLE dict and return it with bytes / list counts."""
    if 'size' not in rle or 'counts' not in rle:
        raise ValueError(f'an RLE needs "size" and "counts", got keys '
                         f'{sorted(rle)}')
    h, w = _check_size(rle['size'])
    counts = rle['counts']
    if isinstance(counts, (bytes, bytearray)):
        try:
            counts = bytes(counts).decode('ascii')
        except UnicodeDecodeError as e:
            raise ValueError(f'compressed RLE counts are not ASCII: {e}')
    if isinstance(counts, str):
        runs = rle_string_to_counts(counts)
        compressed = True
    elif isinstance(counts, (list, tuple)):
        if not all(isinstance(c, (int, np.integer)) for c in counts):
            raise ValueError('uncompressed RLE counts must be integers')
        runs = [int(c) for c in counts]
        compressed = False
    else:
        raise ValueError(f'RLE "counts" must be str, bytes or a list of '
                         f'ints, got {type(counts).__name__}')
    if any(r < 0 for r in runs):
        raise ValueError('RLE has a negative run length')
    if sum(runs) != h * w:
        raise ValueError(f'RLE runs cover {sum(runs)} pixels but its size '
                         f'{h}x{w} has {h * w}')
    if compressed:
        return dict(size=[h, w], counts=counts.encode('ascii'))
    return dict(size=[h, w], counts=runs)


def _validate_polygon(poly: Any) -> List[float]:
    if (not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2):
        raise ValueError('a polygon must be a flat list [x0, y0, x1, y1, ...] '
                         'with at least 3 points')
    try:
        coords = [float(v) for v in poly]
    except (TypeError, ValueError):
        raise ValueError('polygon coordinates must be numbers')
    if not np.all(np.isfinite(coords)):
        raise ValueError('polygon coordinates must be finite')
    return coords


def validate_segmentation(segmentation: Any) -> None:
    """Check the structure of a segmentation without decoding it.

    Cheap enough to run on every annotation at dataset initialisation.

    Args:
        segmentation: An RLE dict, a list of RLE dicts, or a list of
            polygons.

    Raises:
        ValueError: If the structure is not one of the accepted forms.
    """
    if isinstance(segmentation, dict):
        if 'size' not in segmentation or 'counts' not in segmentation:
            raise ValueError('an RLE needs "size" and "counts", got keys '
                             f'{sorted(segmentation)}')
        _check_size(segmentation['size'])
        return
    if isinstance(segmentation, (list, tuple)) and len(segmentation) > 0:
        if all(isinstance(s, dict) for s in segmentation):
            for s in segmentation:
                validate_segmentation(s)
            return
        if all(isinstance(s, (list, tuple)) for s in segmentation):
            for s in segmentation:
                _validate_polygon(s)
            return
    raise ValueError('segmentation must be an RLE dict, a non-empty list of '
                     'RLE dicts or a non-empty list of polygons, got '
                     f'{type(segmentation).__name__} {str(segmentation)[:80]}')


def decode_segmentation(segmentation: Any,
                        height: Optional[int] = None,
                        width: Optional[int] = None) -> np.ndarray:
    """Decode a COCO-style segmentation into a binary mask.

    Several parts (a list of RLEs or of polygons) are merged by union.

    Args:
        segmentation: Compressed RLE (``counts`` str or bytes), uncompressed
            RLE (``counts`` list of ints), a list of such dicts, or a list of
            polygons ``[[x0, y0, x1, y1, ...], ...]``.
        height (int, optional): Image height; required for polygons.
        width (int, optional): Image width; required for polygons.

    Returns:
        np.ndarray: (H, W) uint8 mask with values in {0, 1}.

    Raises:
        ValueError: For a malformed segmentation (message says why).
    """
    _require_pycocotools()
    validate_segmentation(segmentation)
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if isinstance(segmentation[0], dict):
        rles = [_validate_rle(s) for s in segmentation]
        sizes = {tuple(r['size']) for r in rles}
        if len(sizes) != 1:
            raise ValueError(f'RLE parts have different sizes {sizes}')
        h, w = rles[0]['size']
        encoded = []
        for r in rles:
            if isinstance(r['counts'], list):
                # uncompressed -> compressed (frPyObjects checks the size)
                encoded.append(coco_mask.frPyObjects(r, h, w))
            else:
                encoded.append(r)
    else:
        if height is None or width is None:
            raise ValueError('polygon masks need the image height and width')
        polys = [_validate_polygon(p) for p in segmentation]
        encoded = coco_mask.frPyObjects(polys, int(height), int(width))
    merged = coco_mask.merge(encoded) if len(encoded) > 1 else encoded[0]
    mask = coco_mask.decode(merged)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return (mask > 0).astype(np.uint8)


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


def segmentation_size(
        segmentation: Any,
        height: Optional[int] = None,
        width: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """The (height, width) a segmentation decodes at, without decoding it.

    Args:
        segmentation: As accepted by :func:`decode_segmentation`.
        height (int, optional): Annotated image height (polygons).
        width (int, optional): Annotated image width (polygons).

    Returns:
        tuple[int, int] | None: The RLE ``size`` (of the first part), or
        ``(height, width)`` for polygons; None for polygons without them
        (they decode at the image size).

    Raises:
        ValueError: If the structure is not one of the accepted forms.
    """
    validate_segmentation(segmentation)
    first = segmentation[0] if isinstance(segmentation,
                                          (list, tuple)) else segmentation
    if isinstance(first, dict):
        return _check_size(first['size'])
    if height is None or width is None:
        return None
    return int(height), int(width)


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
