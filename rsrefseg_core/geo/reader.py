"""Read an image for referring segmentation from a file, bytes or an array.

8-bit photos (JPEG, 8-bit PNG, BMP, WebP) without a georeference sidecar are
decoded by OpenCV exactly as mmcv's ``LoadImageFromFile`` does (its default
cv2 backend; the others go through mmcv); everything else
(GeoTIFF / any GDAL format, 16-bit PNG, georeferenced JPEG) is read with
rasterio: band selection, nodata / alpha / internal masks, percentile
stretch of non-8-bit data (:mod:`.stretch`), geotransform and CRS, an
optional region of interest read as a window (:mod:`.roi`) and, for reads
larger than ``max_size``, decimation while reading (:mod:`.decimation`).
"""
import os.path as osp
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .decimation import (decimated_shape, read_bands, read_cache_env,
                         scale_transform)
from .raster_image import RasterImage
from .roi import check_geotransform, roi_window, window_transform
from .stretch import DEFAULT_STRETCH, StretchType, check_stretch, to_uint8

ImageSource = Union[str, Path, bytes]
#: World-file / aux sidecars that georeference a JPEG or PNG.
SIDECAR_SUFFIXES = ('.wld', '.aux.xml')
WORLD_FILE_EXTS = {'.jpg': '.jgw', '.jpeg': '.jgw', '.png': '.pgw'}


def require_rasterio(source: str):
    """Import rasterio or say how to install it.

    Args:
        source (str): The file that needs it (for the message).

    Returns:
        module: ``rasterio``.
    """
    try:
        import rasterio
        import rasterio.io  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f'reading {source} needs rasterio (GeoTIFF and other raster '
            'formats): pip install -e ".[geo]" (or `make install`)') from e
    return rasterio


def is_8bit_photo(head: bytes) -> bool:
    """Whether the bytes start an 8-bit JPEG, PNG, BMP or WebP file.

    Args:
        head (bytes): At least the first 32 bytes of the file.

    Returns:
        bool: True for formats mmcv's colour decoder reads without loss of
        range (a 16-bit PNG is False).
    """
    if head[:3] == b'\xff\xd8\xff':
        return True
    if head[:8] == b'\x89PNG\r\n\x1a\n':
        return len(head) > 24 and head[24] <= 8  # IHDR bit depth
    if head[:2] == b'BM':
        return True
    return head[:4] == b'RIFF' and head[8:12] == b'WEBP'


def has_georeference_sidecar(path: str) -> bool:
    """Whether a world file or ``.aux.xml`` sits beside ``path``."""
    stem, ext = osp.splitext(path)
    candidates = [path + s for s in SIDECAR_SUFFIXES] + [stem + '.wld']
    if ext.lower() in WORLD_FILE_EXTS:
        wf = WORLD_FILE_EXTS[ext.lower()]
        candidates += [stem + wf, stem + wf.upper()]
    return any(osp.isfile(c) for c in candidates)


def select_bands(count: int,
                 bands: Optional[Sequence[int]] = None,
                 colorinterp: Optional[Sequence[str]] = None,
                 band_info: str = '',
                 source: str = 'image') -> Tuple[int, int, int]:
    """The three 1-based bands shown as R, G, B.

    Args:
        count (int): Number of bands of the input.
        bands (Sequence[int], optional): Explicit choice: three band numbers
            (R, G, B), or one (shown as grey). 1-based, as in GDAL / QGIS.
        colorinterp (Sequence[str], optional): Colour interpretation per
            band (``'red'``, ``'green'``, ``'blue'``, ``'gray'``, ...).
        band_info (str): Band list for the error message.
        source (str): Image name for error messages.

    Returns:
        tuple[int, int, int]: Band numbers in R, G, B order. Without an
        explicit choice: the bands tagged red / green / blue, else (1, 2, 3)
        for a 3-band input.

    Raises:
        ValueError: For an invalid choice, or an input that is not 3-band
            RGB without a choice (the message says how to choose).
    """
    if bands is not None:
        try:
            chosen = tuple(int(b) for b in bands)
        except (TypeError, ValueError):
            raise ValueError(f'{source}: bands must be band numbers, got '
                             f'{bands!r}') from None
        if len(chosen) == 1:
            chosen = chosen * 3
        if len(chosen) != 3:
            raise ValueError(f'{source}: bands must be 3 band numbers (shown '
                             f'as R, G, B) or 1 (shown as grey), got '
                             f'{bands!r}')
        bad = [b for b in chosen if not 1 <= b <= count]
        if bad:
            raise ValueError(f'{source} has {count} band(s) (numbered 1 to '
                             f'{count}); bands {bad} do not exist')
        return chosen
    names = [str(c).lower() for c in (colorinterp or [])]
    if all(c in names for c in ('red', 'green', 'blue')):
        return tuple(names.index(c) + 1 for c in ('red', 'green', 'blue'))
    if count == 3:
        return 1, 2, 3
    hint = ('bands=(1, 1, 1) (--bands 1) shows band 1 as grey' if count < 3
            else 'bands=(3, 2, 1) (--bands 3 2 1) shows bands 3, 2, 1 as '
            'red, green, blue')
    info = f' [{band_info}]' if band_info else ''
    raise ValueError(
        f'{source} has {count} band(s){info} and no red/green/blue colour '
        'interpretation: choose the bands shown as R, G, B explicitly '
        f'(1-based, as in GDAL), e.g. {hint}')


def _finish(rgb: np.ndarray, valid: np.ndarray, stretch: StretchType,
            source: str, **kwargs) -> RasterImage:
    """(3, H, W) RGB bands + (3, H, W) validity -> :class:`RasterImage`."""
    stretch = check_stretch(stretch)
    valid = np.broadcast_to(valid, rgb.shape)
    if np.issubdtype(rgb.dtype, np.floating):
        valid = valid & np.isfinite(rgb)
    out, ranges = to_uint8(rgb, valid, stretch, source)
    valid_any = valid.any(axis=0)
    nodata = None if valid_any.all() else ~valid_any
    img = np.ascontiguousarray(out[::-1].transpose(1, 2, 0))  # BGR, HWC
    return RasterImage(
        img=img,
        source=source,
        nodata_mask=nodata,
        dtype=str(rgb.dtype),
        stretch=stretch if ranges is not None else None,
        stretch_ranges=ranges,
        **kwargs)


def _read_photo(data: bytes, source: str, bands, roi, roi_crs: str,
                imdecode_backend: str) -> RasterImage:
    try:
        if imdecode_backend == 'cv2':
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        else:  # pillow / turbojpeg / tifffile, as the mmcv loaders offer
            import mmcv
            img = mmcv.imfrombytes(
                data, flag='color', backend=imdecode_backend)
    except Exception as e:  # cv2.error, PIL errors
        raise OSError(f'cannot decode image {source} '
                      f'({type(e).__name__}: {e})') from e
    if img is None or img.size == 0:
        raise OSError(f'cannot decode image {source}')
    window = None
    if roi is not None:
        window = roi_window(
            roi, roi_crs, img.shape[1], img.shape[0], source=source)
        c, r, w, h = window
        img = img[r:r + h, c:c + w]
    chosen = None
    if bands is not None:
        chosen = select_bands(3, bands, source=source)
        rgb = img[..., ::-1][..., [b - 1 for b in chosen]]
        img = np.ascontiguousarray(rgb[..., ::-1])
    return RasterImage(
        img=np.ascontiguousarray(img),
        source=source,
        window=window,
        bands=chosen)


def _read_raster(opener: Callable, source: str, bands, stretch, roi,
                 roi_crs: str, max_size: Optional[int],
                 path: Optional[str]) -> RasterImage:
    rasterio = require_rasterio(source)
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window
    try:
        with warnings.catch_warnings(), rasterio.Env(**read_cache_env()):
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with opener() as src:
                info = ', '.join(
                    f'{i}: {ci.name}' + (f' "{d}"' if d else '')
                    for i, (ci, d) in enumerate(
                        zip(src.colorinterp, src.descriptions), 1))
                chosen = select_bands(src.count, bands,
                                      [c.name for c in src.colorinterp], info,
                                      source)
                georef = src.crs is not None or \
                    src.transform != Affine.identity()
                if not georef and src.gcps[0]:
                    warnings.warn(
                        f'{source} is georeferenced by ground control points '
                        'only (no geotransform); outputs are not '
                        'georeferenced - warp it first (gdalwarp)')
                if georef:
                    check_geotransform(src.transform, source)
                window = None if roi is None else roi_window(
                    roi, roi_crs, src.width, src.height,
                    src.transform if georef else None, src.crs, source)
                rwin = None if window is None else Window(*window)
                native = (src.height, src.width) if window is None else \
                    (window[3], window[2])
                shape = decimated_shape(*native, max_size)
                data, valid = read_bands(src, chosen, rwin, shape)
                crs = src.crs
                transform = window_transform(src.transform, window) \
                    if georef else None
    except RasterioError as e:
        raise OSError(f'cannot read or decode image {source} with rasterio '
                      f'({type(e).__name__}: {e})') from e
    grid = {}
    if shape is not None:
        grid = dict(native_shape=native, native_transform=transform)
        if transform is not None:
            transform = scale_transform(transform, native, shape)
    return _finish(
        data,
        valid,
        stretch,
        source,
        transform=transform,
        crs=crs,
        window=window,
        bands=chosen,
        path=path,
        **grid)


def read_image(source: ImageSource,
               bands: Optional[Sequence[int]] = None,
               stretch: StretchType = DEFAULT_STRETCH,
               roi: Optional[Sequence[float]] = None,
               roi_crs: str = 'pixel',
               name: Optional[str] = None,
               imdecode_backend: str = 'cv2',
               max_size: Optional[int] = None) -> RasterImage:
    """Read an image file (or its bytes) for referring segmentation.

    Args:
        source (str | Path | bytes): A path, or the file's bytes (from an
            mmengine file backend).
        bands (Sequence[int], optional): 1-based bands shown as R, G, B (see
            :func:`select_bands`). Required for inputs that are not 3-band
            and carry no red/green/blue colour interpretation.
        stretch (Sequence[float] | None): Percentile stretch of non-8-bit
            data (see :func:`.to_uint8`). Defaults to (2, 98).
        roi (Sequence[float], optional): Region of interest read instead of
            the whole image (see :func:`.roi_window`).
        roi_crs (str): ``'pixel'``, ``'map'`` or a CRS such as
            ``'EPSG:4326'``. Defaults to ``'pixel'``.
        name (str, optional): Name in messages (defaults to the path).
        imdecode_backend (str): mmcv backend for 8-bit photos.
        max_size (int, optional): Longest side of the image returned for
            files read with rasterio: a larger image (or region of
            interest) is decimated while it is read (mean of the valid
            pixels, from the file's overviews when it has them; see
            :mod:`.decimation`), the stretch percentiles and nodata are
            taken on that read and the transform is scaled to match. None
            (default) reads at the file's resolution. 8-bit photos decoded
            by mmcv are kept at their size.

    Returns:
        RasterImage: (H, W, 3) uint8 BGR image, nodata mask, georeference.

    Raises:
        FileNotFoundError: For a missing file.
        OSError: For a file that cannot be decoded (naming it).
        ValueError: For a bad band choice, ROI or stretch.
    """
    if isinstance(source, bytes):
        name = name or 'image bytes'
        if not source:
            raise OSError(f'cannot decode image {name}: the file is empty')
        if is_8bit_photo(source[:32]):
            return _read_photo(source, name, bands, roi, roi_crs,
                               imdecode_backend)
        rasterio = require_rasterio(name)
        return _read_raster(lambda: rasterio.io.MemoryFile(source).open(),
                            name, bands, stretch, roi, roi_crs, max_size, None)
    path = str(source)
    name = name or path
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path} not found')
    with open(path, 'rb') as f:
        head = f.read(32)
    if not head:
        raise OSError(f'cannot decode image {name}: the file is empty')
    if is_8bit_photo(head) and not has_georeference_sidecar(path):
        with open(path, 'rb') as f:
            data = f.read()
        return _read_photo(data, name, bands, roi, roi_crs, imdecode_backend)
    rasterio = require_rasterio(name)
    return _read_raster(lambda: rasterio.open(path), name, bands, stretch, roi,
                        roi_crs, max_size, path)


def array_to_image(array: np.ndarray,
                   bands: Optional[Sequence[int]] = None,
                   stretch: StretchType = DEFAULT_STRETCH,
                   roi: Optional[Sequence[float]] = None,
                   name: str = 'array') -> RasterImage:
    """Wrap an in-memory image with the same rules as files.

    Args:
        array (np.ndarray): (H, W, C) image, channels last, any real dtype.
            Without ``bands`` it must have 3 channels in **BGR** order (as
            ``mmcv.imread`` returns); with ``bands``, those 1-based channels
            are shown as R, G, B. NaN values and the mask of a
            ``np.ma.MaskedArray`` are nodata.
        bands (Sequence[int], optional): See :func:`select_bands`.
        stretch (Sequence[float] | None): See :func:`.to_uint8`; uint8
            arrays pass unchanged.
        roi (Sequence[float], optional): Pixel region of interest
            ``(col0, row0, col1, row1)``.
        name (str): Name in messages.

    Returns:
        RasterImage: Not georeferenced.
    """
    if not isinstance(array, np.ndarray) or array.ndim != 3:
        shape = getattr(array, 'shape', None)
        raise ValueError(f'{name}: expected an (H, W, C) image array, got '
                         f'{type(array).__name__} of shape {shape}')
    mask = np.ma.getmaskarray(array) if np.ma.isMaskedArray(array) else None
    data = np.ma.getdata(array)
    count = data.shape[2]
    if bands is None:
        if count != 3:
            select_bands(count, None, None, '', name)  # raises with a hint
        chosen, order = None, [2, 1, 0]  # BGR -> RGB
    else:
        chosen = select_bands(count, bands, source=name)
        order = [b - 1 for b in chosen]
    window = None
    if roi is not None:
        window = roi_window(
            roi, 'pixel', data.shape[1], data.shape[0], source=name)
        c, r, w, h = window
        data = data[r:r + h, c:c + w]
        mask = None if mask is None else mask[r:r + h, c:c + w]
    rgb = np.ascontiguousarray(data.transpose(2, 0, 1)[order])
    valid = np.ones(rgb.shape, bool) if mask is None else \
        ~np.ascontiguousarray(mask.transpose(2, 0, 1)[order])
    return _finish(rgb, valid, stretch, name, window=window, bands=chosen)
