"""Loading of referring-segmentation images and ground truth."""
from typing import Optional, Sequence

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.logging import print_log
from mmseg.registry import TRANSFORMS

from rsrefseg_core.geo import (DEFAULT_STRETCH, RasterImage, check_stretch,
                               read_image)
from rsrefseg_core.geo.stretch import StretchType
from ..mask_utils import (DEFAULT_MAX_MASK_PIXELS, align_mask,
                          binarize_mask_file, check_max_pixels,
                          decode_segmentation, mask_error_kind,
                          segmentation_size)


def _describe(results: dict) -> str:
    """Name a sample for error messages (annotation source, ids, image)."""
    parts = []
    if results.get('mask_source'):
        parts.append(str(results['mask_source']))
    for key in ('ref_id', 'sent_id'):
        if results.get(key) is not None and key not in ' '.join(parts):
            parts.append(f'{key}={results[key]}')
    if results.get('img_path'):
        parts.append(f'image {results["img_path"]}')
    return ', '.join(parts) or 'sample'


@TRANSFORMS.register_module()
class LoadReferringImageFromFile(LoadImageFromFile):
    """Load an image (JPEG / PNG / GeoTIFF / any rasterio format) for a
    referring sample; errors name the sample.

    8-bit JPEG / PNG / BMP / WebP files are decoded by mmcv exactly as
    ``LoadImageFromFile`` does. Other files (GeoTIFF, JPEG 2000, 16-bit
    PNG, ...) are read with rasterio (:func:`rsrefseg_core.geo.read_image`):

    - ``bands`` picks the 1-based bands shown as R, G, B (multispectral
      files); without it a file must be 3-band or carry red/green/blue colour
      interpretation, otherwise a clear error says how to choose;
    - non-8-bit data gets a per-band percentile stretch to 0-255 (nodata
      excluded), logged for the first image (the ranges of every image are
      in its ``stretch_ranges`` metainfo);
    - nodata pixels (nodata value, alpha / internal mask, NaN) are reported
      in ``nodata_mask``; the segmentor never predicts them as target.

    Every read/decode failure raises :class:`OSError`
    (:class:`FileNotFoundError` for a missing file) naming the image and the
    referring ids; a bad band choice raises :class:`ValueError`.
    ``ignore_empty=True`` keeps mmcv's behaviour of returning ``None``, on
    which mmengine's training datasets silently fetch another sample: leave
    it off (the default).

    Added keys: ``img`` ((H, W, 3) BGR uint8), ``img_shape``, ``ori_shape``;
    for rasters, when they apply: ``nodata_mask`` ((H, W) bool),
    ``geo_transform``, ``crs``, ``stretch_ranges``.

    Args:
        bands (Sequence[int], optional): 1-based bands shown as R, G, B,
            e.g. ``(3, 2, 1)``; one band is shown as grey.
        stretch (Sequence[float] | None): Percentile stretch of non-8-bit
            data. Defaults to ``(2, 98)``; None passes through data already
            in 0-255 (and raises for data outside it).
        **kwargs: ``LoadImageFromFile`` arguments (``to_float32``,
            ``color_type``, ``imdecode_backend``, ``backend_args``,
            ``ignore_empty``). With a ``color_type`` other than ``'color'``
            every file is decoded by mmcv as before.
    """

    def __init__(self,
                 bands: Optional[Sequence[int]] = None,
                 stretch: StretchType = DEFAULT_STRETCH,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.bands = tuple(bands) if bands is not None else None
        self.stretch = check_stretch(stretch)
        self._reported = False

    def _report(self, image: RasterImage) -> None:
        """Log the first stretched or nodata-bearing image."""
        if self._reported or (image.stretch_ranges is None
                              and not image.nodata_pixels):
            return
        self._reported = True
        print_log(
            f'{type(self).__name__}: {image.describe()} (shown for '
            'the first such image; every sample carries its ranges '
            'in `stretch_ranges` and its nodata in `nodata_mask`)',
            logger='current')

    def transform(self, results: dict) -> Optional[dict]:
        """Read and decode ``results['img_path']``."""
        filename = results['img_path']
        try:
            img_bytes = fileio.get(filename, backend_args=self.backend_args)
        except FileNotFoundError as e:
            if self.ignore_empty:
                return None
            raise FileNotFoundError(
                f'image not found for {_describe(results)}: {e}') from e
        try:
            if self.color_type != 'color':
                img = mmcv.imfrombytes(
                    img_bytes,
                    flag=self.color_type,
                    backend=self.imdecode_backend)
                assert img is not None, f'failed to load image: {filename}'
                results.update(
                    img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
            else:
                image = read_image(
                    img_bytes,
                    self.bands,
                    self.stretch,
                    name=filename,
                    imdecode_backend=self.imdecode_backend)
                self._report(image)
                results.update(image.pipeline_inputs())
        except ValueError as e:  # band choice, stretch of out-of-range data
            if self.ignore_empty:
                return None
            raise ValueError(f'{e} ({_describe(results)})') from e
        except ImportError:
            raise
        except Exception as e:  # cv2.error, AssertionError, rasterio, IO
            if self.ignore_empty:
                return None
            raise OSError(f'cannot read or decode the image of '
                          f'{_describe(results)} '
                          f'({type(e).__name__}: {e})') from e
        if self.to_float32:
            results['img'] = results['img'].astype(np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{super().__repr__()[:-1]}, bands={self.bands}, '
                f'stretch={self.stretch})')


@TRANSFORMS.register_module()
class LoadReferringAnnotations(BaseTransform):
    """Decode the referred objects' mask into ``results['gt_seg_map']``.

    The mask source is taken from the first present of:

    1. ``referring_mask``: an in-memory (H, W) array (synthetic data),
       nonzero = target, ``ignore_index`` kept;
    2. ``no_target=True``: the expression refers to nothing in the image
       (generalized referring): an all-zero mask of the image's size
       (``ori_shape``, else ``seg_size``), nothing decoded;
    3. ``segmentation``: COCO compressed RLE (``counts`` str or bytes),
       uncompressed RLE, a list of those, polygons, or a list of several
       objects' segmentations (their union) (RRSIS-D, jsonl); polygons use
       ``seg_size`` (h, w) or the image's ``ori_shape``;
    4. ``seg_map_path``: a mask image file (RefSegRS, RISBench), binarised
       by :func:`binarize_mask_file` with ``mask_mode``.

    The decoded mask must have the original image size (``ori_shape``, set by
    ``LoadImageFromFile``), up to ``size_tolerance`` pixels per side: a mask
    off by at most that many rows and columns is aligned to the image at
    the top-left origin the annotation uses (rows / columns beyond the image
    are cropped, missing ones at the bottom / right are filled with
    ``pad_value``, by default ``ignore_index``: they carry no annotation, so
    the loss and :class:`ReferringIoUMetric` skip them, and the metric still
    scores the ground truth at the image size). A larger difference raises
    an error naming the sample, the image and both sizes; for a
    ``segmentation`` it is found from the annotation, before anything is
    decoded. A segmentation larger than ``max_mask_pixels`` or otherwise
    beyond the bounds of :mod:`rsrefseg_mm.datasets.mask_utils` is refused
    before decoding too. Place this transform *before* ``Resize`` for
    training (the mask is resized with the image) and *after* it for
    testing (the ground truth stays at the original size, where the metric
    scores).

    Required keys: one of the sources above; ``ori_shape`` (optional, for
    the size check); ``mask_size_tolerance`` and ``mask_max_pixels``
    (optional, set by datasets such as :class:`RRSISDDataset`, which report
    the misaligned images once when they are built). Added keys:
    ``gt_seg_map`` (uint8, 0 background, 1 target, ``ignore_index``
    ignore), ``seg_fields``.

    Args:
        mask_mode (str): How mask files are read: ``'auto'``, ``'binary'``
            or ``'label'`` (see :func:`binarize_mask_file`). Defaults to
            ``'auto'``.
        ignore_index (int): Ignore label. Defaults to 255.
        check_size (bool): Compare the mask size with the image's original
            size (align within ``size_tolerance``, raise beyond). False
            keeps the mask at its decoded size. Defaults to True.
        size_tolerance (int, optional): Largest difference in pixels, per
            side (height and width separately), that is aligned. None
            (default) takes the sample's ``mask_size_tolerance`` (the
            dataset's ``size_tolerance``, e.g. 16 for RRSIS-D), else 0
            (sizes must match exactly), as mmseg's ``LoadAnnotations``
            takes ``reduce_zero_label`` from the dataset.
        pad_value (int, optional): Label of the pixels a mask smaller than
            its image is padded with. None (default): ``ignore_index``.
        max_mask_pixels (int, optional): Largest segmentation decoded
            (``h * w``). None (default) takes the sample's
            ``mask_max_pixels`` (the dataset's ``max_mask_pixels``), else
            :data:`~rsrefseg_mm.datasets.mask_utils.DEFAULT_MAX_MASK_PIXELS`
            (100 MP).
        imdecode_backend (str): Backend for mask files. Defaults to
            ``'pillow'`` (reads TIFF / PNG without colour conversion).
        backend_args (dict, optional): File backend arguments.

    Raises:
        ValueError / FileNotFoundError: Naming the annotation source, ref id
            and image, for a malformed or too large segmentation, a missing
            or unreadable mask file or a mask/image size mismatch.
    """

    def __init__(self,
                 mask_mode: str = 'auto',
                 ignore_index: int = 255,
                 check_size: bool = True,
                 size_tolerance: Optional[int] = None,
                 pad_value: Optional[int] = None,
                 max_mask_pixels: Optional[int] = None,
                 imdecode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        if mask_mode not in ('auto', 'binary', 'label'):
            raise ValueError(f"mask_mode must be 'auto', 'binary' or "
                             f"'label', got {mask_mode!r}")
        if size_tolerance is not None and (not isinstance(size_tolerance, int)
                                           or size_tolerance < 0):
            raise ValueError(f'size_tolerance must be None or an int >= 0, '
                             f'got {size_tolerance!r}')
        self.max_mask_pixels = None if max_mask_pixels is None else \
            check_max_pixels(max_mask_pixels)
        self.mask_mode = mask_mode
        self.ignore_index = ignore_index
        self.check_size = check_size
        self.size_tolerance = size_tolerance
        self.pad_value = ignore_index if pad_value is None else pad_value
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args.copy() if backend_args else None

    def _from_file(self, path: str, results: dict) -> np.ndarray:
        try:
            data = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'mask file {path} not found ({_describe(results)})') from None
        try:
            mask = mmcv.imfrombytes(
                data, flag='unchanged', backend=self.imdecode_backend)
        except Exception as e:
            raise ValueError(f'cannot decode mask file {path} '
                             f'({_describe(results)}): {e!r}') from e
        if mask is None or mask.size == 0:
            raise ValueError(f'cannot decode mask file {path} '
                             f'({_describe(results)})')
        try:
            return binarize_mask_file(
                np.squeeze(mask)
                if mask.ndim == 3 and mask.shape[2] == 1 else mask,
                self.mask_mode,
                self.ignore_index,
                source=path)
        except ValueError as e:
            raise ValueError(f'{e} ({_describe(results)})') from e

    def transform(self, results: dict) -> dict:
        """Decode the mask of ``results`` into ``gt_seg_map``.

        Args:
            results (dict): Result dict from the dataset / previous
                transforms.

        Returns:
            dict: ``results`` with ``gt_seg_map`` and ``seg_fields``.
        """
        ori_shape = results.get('ori_shape')
        if results.get('referring_mask') is not None:
            mask = np.asarray(results['referring_mask'])
            if mask.ndim != 2:
                raise ValueError(f'referring_mask must be (H, W), got '
                                 f'{mask.shape} ({_describe(results)})')
            keep = mask == self.ignore_index
            mask = (mask > 0).astype(np.uint8)
            mask[keep] = self.ignore_index
        elif results.get('no_target'):
            shape = ori_shape if ori_shape is not None else \
                results.get('seg_size')
            if shape is None:
                raise KeyError('LoadReferringAnnotations needs ori_shape (or '
                               'seg_size) for the empty mask of a no-target '
                               f'sample ({_describe(results)})')
            mask = np.zeros(tuple(shape[:2]), np.uint8)
        elif results.get('segmentation') is not None:
            mask = self._decode(results['segmentation'], ori_shape, results)
        elif results.get('seg_map_path'):
            mask = self._from_file(results['seg_map_path'], results)
        else:
            raise KeyError('LoadReferringAnnotations found no mask source '
                           '(referring_mask, segmentation or seg_map_path) '
                           f'in {_describe(results)}')

        if self.check_size and ori_shape is not None and \
                tuple(mask.shape[:2]) != tuple(ori_shape[:2]):
            mask = self._align(mask, tuple(ori_shape[:2]), results)
        results['gt_seg_map'] = mask
        seg_fields = results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in seg_fields:
            seg_fields.append('gt_seg_map')
        return results

    def _decode(self, segmentation, ori_shape: Optional[tuple],
                results: dict) -> np.ndarray:
        """Check a segmentation's size against the image, then decode."""
        max_pixels = self.max_mask_pixels
        if max_pixels is None:
            max_pixels = results.get('mask_max_pixels') or \
                DEFAULT_MAX_MASK_PIXELS
        size = results.get('seg_size') or (tuple(ori_shape[:2])
                                           if ori_shape is not None else None)
        h, w = size if size is not None else (None, None)
        try:
            mask_size = segmentation_size(segmentation, h, w, max_pixels)
        except ValueError as e:
            raise type(e)(f'{mask_error_kind(e)} in {_describe(results)}: '
                          f'{e}') from e
        if self.check_size and ori_shape is not None and \
                mask_size is not None:
            self._check_shape(mask_size, tuple(ori_shape[:2]), results)
        try:
            return decode_segmentation(segmentation, h, w, max_pixels)
        except ValueError as e:
            raise type(e)(f'{mask_error_kind(e)} in {_describe(results)}: '
                          f'{e}') from e

    def _check_shape(self, mask_shape: tuple, shape: tuple,
                     results: dict) -> None:
        """Raise if a mask is off its image by more than the tolerance."""
        tolerance = self.size_tolerance
        if tolerance is None:
            tolerance = results.get('mask_size_tolerance') or 0
        dh, dw = shape[0] - mask_shape[0], shape[1] - mask_shape[1]
        if max(abs(dh), abs(dw)) > tolerance:
            hint = ('' if tolerance else '; a mask a few pixels off its '
                    'image is aligned with size_tolerance=N (dataset or '
                    'LoadReferringAnnotations)')
            raise ValueError(
                f'mask size {tuple(mask_shape)} differs from image size '
                f'{shape} (h, w) by ({dh:+d}, {dw:+d}) px, more than '
                f'size_tolerance={tolerance}, in {_describe(results)}{hint}')

    def _align(self, mask: np.ndarray, shape: tuple,
               results: dict) -> np.ndarray:
        """Align a mask a few pixels off its image; raise beyond
        the tolerance."""
        self._check_shape(mask.shape[:2], shape, results)
        return align_mask(mask, shape, self.pad_value)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(mask_mode={self.mask_mode!r}, '
                f'ignore_index={self.ignore_index}, '
                f'check_size={self.check_size}, '
                f'size_tolerance={self.size_tolerance}, '
                f'pad_value={self.pad_value}, '
                f'max_mask_pixels={self.max_mask_pixels}, '
                f'imdecode_backend={self.imdecode_backend!r})')
