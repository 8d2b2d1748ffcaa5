"""What the model sees of a user's input: the image as read (at most at the
working resolution), the test pipeline without loading and annotations."""
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from mmengine.config import Config
from mmengine.dataset import Compose

from rsrefseg_deploy.geo.stretch import StretchType
from ..geo import DEFAULT_STRETCH, RasterImage, array_to_image, read_image

InputType = Union[str, Path, np.ndarray, RasterImage]
#: Transforms that need annotations; dropped for inference.
ANNOTATION_TRANSFORMS = ('LoadReferringAnnotations', 'LoadAnnotations')
#: Image loaders; inputs are read by :func:`load_referring_image` instead.
IMAGE_LOADERS = ('LoadReferringImageFromFile', 'LoadImageFromFile')
#: Whole-image (and region of interest) reads of rasters are decimated to a
#: longest side of at most this many times the model's input size: finer
#: than what the model looks at, so that the mask (upsampled from the
#: model's output to the read's size) keeps detail, while memory and time
#: stay independent of the scene's size.
WORKING_SIZE_FACTOR = 2


def build_test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without image and annotation loading
    (images are read by :func:`rsrefseg_mm.geo.read_image`)."""
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] not in ANNOTATION_TRANSFORMS + IMAGE_LOADERS
    ]
    return Compose(pipeline)


def model_input_size(cfg: Config) -> int:
    """The longest side of the image the model is given.

    Args:
        cfg (Config): The model's config.

    Returns:
        int: The test pipeline's ``Resize`` scale, else the data
        preprocessor's ``size`` (longest side).

    Raises:
        ValueError: The config has neither.
    """
    pipeline = cfg.get('test_dataloader', {}).get('dataset',
                                                  {}).get('pipeline', [])
    for t in pipeline:
        if t.get('type') == 'Resize' and t.get('scale') is not None:
            scale = t['scale']
            return int(
                max(scale) if isinstance(scale, (list, tuple)) else scale)
    size = cfg.get('model', {}).get('data_preprocessor', {}).get('size')
    if size is not None:
        return int(max(size))
    raise ValueError('the config has no test pipeline Resize scale and no '
                     'model.data_preprocessor.size: cannot tell the working '
                     'resolution; give max_read_size explicitly')


def working_size(cfg: Config) -> int:
    """Longest side of decimated reads for a model:
    :data:`WORKING_SIZE_FACTOR` x :func:`model_input_size`."""
    return WORKING_SIZE_FACTOR * model_input_size(cfg)


def resolve_max_read_size(max_read_size: Union[int, str, None],
                          cfg: Config) -> Optional[int]:
    """``'auto'`` -> :func:`working_size`; None (file resolution) and
    positive integers pass.

    Raises:
        ValueError: For anything else.
    """
    if max_read_size == 'auto':
        return working_size(cfg)
    if max_read_size is None:
        return None
    if isinstance(max_read_size, bool) or \
            not isinstance(max_read_size, int) or max_read_size < 1:
        raise ValueError("max_read_size must be 'auto', None or a positive "
                         f'integer, got {max_read_size!r}')
    return max_read_size


def load_referring_image(img: InputType,
                         index: int = 0,
                         bands: Optional[Sequence[int]] = None,
                         stretch: StretchType = DEFAULT_STRETCH,
                         roi: Optional[Sequence[float]] = None,
                         roi_crs: str = 'pixel',
                         name: Optional[str] = None,
                         max_size: Optional[int] = None) -> RasterImage:
    """Read one input of :func:`inference_referring` (same arguments;
    ``name`` replaces a file's path in messages; ``max_size`` decimates
    larger raster reads, see :func:`rsrefseg_mm.geo.read_image`).

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


def prepare_inputs(image: RasterImage, text: str, pipeline: Compose) -> dict:
    """Run the test pipeline on a loaded image and its expression."""
    results = dict(text=text, **image.pipeline_inputs())
    if not image.source.startswith('array'):
        results['img_path'] = image.source
    return pipeline(results)
