"""Encode an image once, answer many expressions: the flow shared by the
PyTorch predictor (``rsrefseg_mm.apis.ReferringPredictor``) and the ONNX
Runtime one (``rsrefseg_deploy.OnnxReferringPredictor``).

:class:`BaseReferringPredictor` owns everything but the engine: argument
checks, reading the image, the cache of encoded images (its key includes
every reading argument, ``max_read_size`` too), expression validation,
chunking into batches (padded to a fixed traced batch where the engine
needs it) and the loop of ``predict``. A runtime supplies two methods:

* ``_encode(raster) -> encoded``: the expression-independent half (image
  towers) of a :class:`~rsrefseg_core.geo.RasterImage`; whatever it
  returns is kept (and cached) as :attr:`~BaseReferringPredictor.encoded`;
* ``_decode(texts, count) -> results``: the expression half for a batch of
  ``texts`` on :attr:`~BaseReferringPredictor.encoded`, returning the
  results of the first ``count`` (the rest is padding).

:func:`zero_nodata` is the one place where nodata pixels are set to
background, for NumPy arrays and torch tensors alike.

Torch-free: NumPy, OpenCV and the tokenizers' cleaners.
"""
from typing import (Any, Callable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from .geo import DEFAULT_STRETCH, RasterImage
from .geo.inputs import InputType, image_cache_key, load_referring_image
from .geo.stretch import StretchType
from .lru_cache import LRUCache, check_cache_size
from .text import check_expression

MaxReadSize = Union[int, str, None]
#: Expressions whose text-tower outputs a predictor keeps (its
#: ``text_cache``: scene windows and images asked the same expression do
#: not run the text tower again).
TEXT_CACHE_SIZE = 16


def check_max_batch(max_batch, name: str = 'max_batch') -> int:
    """``max_batch`` as an int >= 1 (``name`` in the message).

    Raises:
        ValueError: For anything else (bools and non-integers too).
    """
    if isinstance(max_batch,
                  bool) or not isinstance(max_batch,
                                          (int, np.integer)) or max_batch < 1:
        raise ValueError(f'{name} must be >= 1, got {max_batch!r}')
    return int(max_batch)


def resolve_max_read_size(
        max_read_size: MaxReadSize,
        auto: Union[int, Callable[[], int]]) -> Optional[int]:
    """The longest side of raster reads.

    Args:
        max_read_size (int | str | None): ``'auto'``, None (the file's
            resolution) or a positive integer.
        auto (int | callable): The size ``'auto'`` stands for (the
            runtime's working size), or a function giving it (called only
            for ``'auto'``).

    Returns:
        int | None: The size, None for the file's resolution.

    Raises:
        ValueError: For anything else.
    """
    if isinstance(max_read_size, str) and max_read_size == 'auto':
        return int(auto() if callable(auto) else auto)
    if max_read_size is None:
        return None
    if isinstance(max_read_size, bool) or \
            not isinstance(max_read_size, (int, np.integer)) or \
            max_read_size < 1:
        raise ValueError("max_read_size must be 'auto', None or a positive "
                         f'integer, got {max_read_size!r}')
    return int(max_read_size)


def zero_nodata(nodata_mask, *arrays, where: str = 'a sample') -> None:
    """Set ``arrays`` to 0 (background) at the nodata pixels, in place.

    The one place where the prediction of a pixel without data is cleared:
    used by ``RSRefSeg.postprocess_result`` (masks and probabilities), the
    PyTorch predictor's global map and the ONNX Runtime predictor's
    post-processing.

    Args:
        nodata_mask (array-like | None): (H, W), True (non-zero) where the
            input has no data. None: nothing to do.
        *arrays: NumPy arrays or torch tensors of shape (..., H, W),
            changed in place.
        where (str): The sample, for the error message (a file, an
            expression).

    Raises:
        ValueError: ``nodata_mask`` is not 2-D, or an array's last two
            dimensions are not its shape.
    """
    if nodata_mask is None:
        return
    if hasattr(nodata_mask, 'detach'):  # a tensor: to NumPy, torch-free
        nodata_mask = nodata_mask.detach().cpu().numpy()
    mask = np.asarray(nodata_mask).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ValueError(f'nodata_mask of {where} must be (H, W), got shape '
                         f'{tuple(mask.shape)}')
    for array in arrays:
        _check_nodata_shape(mask, array, where)
    if not mask.any():
        return
    on_device = {}  # a tensor's mask on its device (torch-free: new_tensor)
    for array in arrays:
        index = mask
        if hasattr(array, 'new_tensor'):
            device = str(array.device)
            if device not in on_device:
                on_device[device] = array.new_tensor(mask).bool()
            index = on_device[device]
        # (:, ..., :, mask): torch does not take an Ellipsis before a mask
        array[(slice(None), ) * (array.ndim - 2) + (index, )] = 0


def _check_nodata_shape(mask: np.ndarray, array, where: str) -> None:
    shape = tuple(array.shape)
    if len(shape) < 2 or shape[-2:] != mask.shape:
        raise ValueError(
            f'nodata_mask {tuple(mask.shape)} does not match the '
            f'prediction {shape[-2:] if len(shape) >= 2 else shape} of '
            f'{where}')


class BaseReferringPredictor:
    """Segment-anything's ``SamPredictor`` workflow, without the engine.

    :meth:`set_image` reads an image and encodes it once (or takes it from
    the cache); :meth:`predict` answers any number of expressions on it,
    decoded together in batches of at most ``max_batch`` (or exactly
    ``batch_size``, padded with the last expression, for graphs traced at a
    fixed count).

    With ``cache_size > 0`` the encodings of the last ``cache_size`` images
    are kept (least recently used dropped first), keyed by the file's or
    array's content and every reading argument (``bands``, ``stretch``,
    ``roi``, ``roi_crs``, ``max_read_size``), so that coming back to an
    image does not encode it again (:attr:`from_cache` tells). Images given
    as a :class:`~rsrefseg_core.geo.RasterImage` (already read) are not
    cached.

    Subclasses implement ``_encode`` and ``_decode`` (see the module
    docstring).

    Args:
        max_batch (int): Most expressions decoded in one call. Defaults
            to 8.
        cache_size (int): Encoded images kept. Defaults to 0 (none).
        max_read_size (int | str | None): Longest side of raster reads
            (larger rasters are decimated while reading): ``'auto'`` is
            ``auto_read_size``; None reads at the file's resolution.
        auto_read_size (int | callable, optional): The runtime's working
            size (or a function giving it), for ``'auto'``.
        batch_size (int, optional): The engine decodes exactly this many
            expressions per call (a graph traced at a fixed count):
            batches are padded to it and ``max_batch`` is not used.
    """

    def __init__(self,
                 max_batch: int = 8,
                 cache_size: int = 0,
                 max_read_size: MaxReadSize = None,
                 auto_read_size: Union[int, Callable[[], int], None] = None,
                 batch_size: Optional[int] = None) -> None:
        self.max_batch = check_max_batch(max_batch)
        self.cache = LRUCache(check_cache_size(cache_size))
        if auto_read_size is None and max_read_size == 'auto':
            raise ValueError(f"{type(self).__name__}: max_read_size='auto' "
                             'needs the working size (auto_read_size)')
        self.max_read_size = resolve_max_read_size(max_read_size,
                                                   auto_read_size)
        #: Expressions per ``_decode`` call: ``batch_size`` (padded) or at
        #: most ``max_batch``.
        self.fixed_batch = None if batch_size is None else \
            check_max_batch(batch_size)
        self.batch = self.fixed_batch or self.max_batch
        self.reset_image()

    # -- the engine -------------------------------------------------------
    def _encode(self, raster: RasterImage) -> Any:
        """The expression-independent encoding of ``raster``."""
        raise NotImplementedError

    def _decode(self, texts: List[str], count: int) -> Sequence[Any]:
        """The results of ``texts[:count]`` on :attr:`encoded` (``texts``
        is padded to :attr:`fixed_batch` when it is set)."""
        raise NotImplementedError

    # -- the image --------------------------------------------------------
    @property
    def is_image_set(self) -> bool:
        """Whether :meth:`set_image` has encoded an image."""
        return self.encoded is not None

    def reset_image(self) -> None:
        """Forget the current image and its encoding."""
        #: The image the model sees (georeference, nodata).
        self.image: Optional[RasterImage] = None
        #: What ``_encode`` returned for :attr:`image`.
        self.encoded: Any = None
        #: Whether the last :meth:`set_image` found the image in the cache.
        self.from_cache = False

    def cache_key(self,
                  image: InputType,
                  bands: Optional[Sequence[int]] = None,
                  stretch: StretchType = DEFAULT_STRETCH,
                  roi: Optional[Sequence[float]] = None,
                  roi_crs: str = 'pixel') -> Optional[Tuple[str, str]]:
        """The cache key of an image and its reading arguments (content
        digest + ``bands``, ``stretch``, ``roi``, ``roi_crs`` and
        ``max_read_size``), None for a ``RasterImage``."""
        return image_cache_key(image, bands, stretch, roi, roi_crs,
                               self.max_read_size)

    def set_image(self,
                  image: InputType,
                  bands: Optional[Sequence[int]] = None,
                  stretch: StretchType = DEFAULT_STRETCH,
                  roi: Optional[Sequence[float]] = None,
                  roi_crs: str = 'pixel',
                  name: Optional[str] = None) -> RasterImage:
        """Read and encode an image (or take it from the cache).

        Args:
            image (str | Path | np.ndarray | RasterImage): A file (JPEG,
                PNG, GeoTIFF, any rasterio-readable raster), an (H, W, C)
                array or an image already read.
            bands (Sequence[int], optional): 1-based bands to use as RGB.
            stretch: Percentile stretch of non-8-bit rasters
                (see :func:`rsrefseg_core.geo.to_uint8`).
            roi (Sequence[float], optional): ``(xmin, ymin, xmax, ymax)``
                to crop before inference.
            roi_crs (str): ``'pixel'`` (default), ``'map'`` or a CRS.
            name (str, optional): Shown instead of a file's path in
                messages.

        Returns:
            RasterImage: The image the model sees (georeference, nodata).
        """
        self.reset_image()
        key = self.cache_key(image, bands, stretch, roi, roi_crs) \
            if self.cache.size else None
        cached = self.cache.lookup(key)
        if cached is not None:
            self.image, self.encoded = cached
            self.from_cache = True
            return self.image
        raster = load_referring_image(image, 0, bands, stretch, roi, roi_crs,
                                      name, self.max_read_size)
        encoded = self._encode(raster)
        self.image, self.encoded = raster, encoded
        self.cache.store(key, (raster, encoded))
        return raster

    # -- the expressions --------------------------------------------------
    def check_texts(self, texts: Union[str, Sequence[str]]) -> List[str]:
        """``texts`` as a list, every expression checked
        (:func:`rsrefseg_core.text.check_expression`).

        Raises:
            ValueError: No expression, or one is empty once cleaned
                (naming ``expression <i>``).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError(f'{type(self).__name__}.predict: no expression')
        for i, text in enumerate(texts):
            check_expression(text, f'expression {i}')
        return texts

    def batches(self, texts: List[str]) -> Iterator[Tuple[List[str], int]]:
        """``(batch, count)``: consecutive runs of ``count`` expressions,
        each batch padded with its last expression to :attr:`fixed_batch`
        when that is set."""
        for start in range(0, len(texts), self.batch):
            chunk = texts[start:start + self.batch]
            count = len(chunk)
            if self.fixed_batch is not None:
                chunk = chunk + chunk[-1:] * (self.fixed_batch - count)
            yield chunk, count

    def predict(self, texts: Union[str, Sequence[str]]) -> Any:
        """Segment what each expression refers to in the set image.

        Args:
            texts (str | Sequence[str]): One or more expressions.

        Returns:
            The runtime's result for a single expression (a str), else a
            list of them in the order of ``texts``.

        Raises:
            RuntimeError: No image was set.
            ValueError: No expression, or an expression is empty once the
                tokenizer has cleaned it.
        """
        if not self.is_image_set:
            raise RuntimeError(f'{type(self).__name__}.predict: call '
                               'set_image() first')
        single = isinstance(texts, str)
        texts = self.check_texts(texts)
        results: List[Any] = []
        for batch, count in self.batches(texts):
            out = list(self._decode(batch, count))
            if len(out) != count:
                raise RuntimeError(
                    f'{type(self).__name__}._decode returned {len(out)} '
                    f'results for {count} expressions')
            results += out
        return results[0] if single else results


__all__ = [
    'BaseReferringPredictor', 'TEXT_CACHE_SIZE', 'check_max_batch',
    'resolve_max_read_size', 'zero_nodata'
]
