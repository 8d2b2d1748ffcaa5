"""What the model sees of a user's input: the image as read, the test
pipeline without loading and annotations."""
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from mmengine.config import Config
from mmengine.dataset import Compose

from ..geo import DEFAULT_STRETCH, RasterImage, array_to_image, read_image
from ..geo.stretch import StretchType

InputType = Union[str, Path, np.ndarray, RasterImage]
#: Transforms that need annotations; dropped for inference.
ANNOTATION_TRANSFORMS = ('LoadReferringAnnotations', 'LoadAnnotations')
#: Image loaders; inputs are read by :func:`load_referring_image` instead.
IMAGE_LOADERS = ('LoadReferringImageFromFile', 'LoadImageFromFile')


def build_test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without image and annotation loading
    (images are read by :func:`rsrefseg_mm.geo.read_image`)."""
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] not in ANNOTATION_TRANSFORMS + IMAGE_LOADERS
    ]
    return Compose(pipeline)


def load_referring_image(img: InputType,
                         index: int = 0,
                         bands: Optional[Sequence[int]] = None,
                         stretch: StretchType = DEFAULT_STRETCH,
                         roi: Optional[Sequence[float]] = None,
                         roi_crs: str = 'pixel',
                         name: Optional[str] = None) -> RasterImage:
    """Read one input of :func:`inference_referring` (same arguments;
    ``name`` replaces a file's path in messages).

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
        return read_image(img, bands, stretch, roi, roi_crs, name=name)
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
