"""A user's input as the model sees it: a path, an array or an image
already read, with a content key for caches of encoded images."""
import hashlib
from pathlib import Path
from typing import Hashable, Optional, Sequence, Union

import numpy as np

from .raster_image import RasterImage
from .reader import array_to_image, read_image
from .stretch import DEFAULT_STRETCH, StretchType

InputType = Union[str, Path, np.ndarray, RasterImage]
#: Whole-image (and region of interest) reads of rasters are decimated to a
#: longest side of at most this many times the model's input size: finer
#: than what the model looks at, so that the mask (upsampled from the
#: model's output to the read's size) keeps detail, while memory and time
#: stay independent of the scene's size.
WORKING_SIZE_FACTOR = 2


def load_referring_image(img: InputType,
                         index: int = 0,
                         bands: Optional[Sequence[int]] = None,
                         stretch: StretchType = DEFAULT_STRETCH,
                         roi: Optional[Sequence[float]] = None,
                         roi_crs: str = 'pixel',
                         name: Optional[str] = None,
                         max_size: Optional[int] = None) -> RasterImage:
    """Read one input of ``inference_referring`` (same arguments;
    ``name`` replaces a file's path in messages; ``max_size`` decimates
    larger raster reads, see :func:`read_image`).

    Returns:
        RasterImage: The (H, W, 3) uint8 BGR image the model sees, with its
        nodata mask and georeference.
    """
    if isinstance(img, RasterImage):
        if bands is not None or roi is not None:
            raise ValueError(f'sample {index}: a RasterImage is already read;'
                             ' pass bands / roi to read_image instead')
        return img
    if isinstance(img, (str, Path)):
        return read_image(
            img, bands, stretch, roi, roi_crs, name=name, max_size=max_size)
    if isinstance(img, np.ndarray):
        if roi is not None and roi_crs != 'pixel':
            raise ValueError(f'sample {index}: an array has no georeference;'
                             ' give the roi in pixels')
        return array_to_image(img, bands, stretch, roi, name=f'array {index}')
    raise ValueError(f'sample {index}: expected an image path, an (H, W, C) '
                     f'array or a RasterImage, got {type(img).__name__}')


def image_cache_key(image: InputType, *read_args) -> Optional[Hashable]:
    """Content hash of a file or array plus the reading arguments; None for
    an image already read (not cached).

    Args:
        image (str | Path | np.ndarray | RasterImage): The input.
        *read_args: Everything else that changes what is read (bands,
            stretch, region of interest, ...).

    Returns:
        tuple | None: ``(sha256 hex digest, repr(read_args))``.
    """
    digest = hashlib.sha256()
    if isinstance(image, (str, Path)):
        with open(image, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
    elif isinstance(image, np.ndarray):
        digest.update(repr((image.shape, image.dtype.str)).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        if np.ma.isMaskedArray(image):
            digest.update(np.ma.getmaskarray(image).tobytes())
    else:
        return None
    return (digest.hexdigest(), repr(read_args))
