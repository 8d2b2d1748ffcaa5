"""What the model sees of a user's input: the image as read (at most at the
working resolution), the test pipeline without loading and annotations."""
from typing import Optional, Union

from mmengine.config import Config
from mmengine.dataset import Compose

from rsrefseg_core.geo import RasterImage
from rsrefseg_core.geo.inputs import (WORKING_SIZE_FACTOR, InputType,
                                      image_cache_key, load_referring_image)
from rsrefseg_core.predictor import \
    resolve_max_read_size as _resolve_max_read_size

#: Transforms that need annotations; dropped for inference.
ANNOTATION_TRANSFORMS = ('LoadReferringAnnotations', 'LoadAnnotations')
#: Image loaders; inputs are read by :func:`load_referring_image` instead.
IMAGE_LOADERS = ('LoadReferringImageFromFile', 'LoadImageFromFile')


def build_test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without image and annotation loading
    (images are read by :func:`rsrefseg_core.geo.read_image`)."""
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
    positive integers pass (the predictors' check,
    :func:`rsrefseg_core.predictor.resolve_max_read_size`).

    Raises:
        ValueError: For anything else.
    """
    return _resolve_max_read_size(max_read_size, lambda: working_size(cfg))


def prepare_inputs(image: RasterImage, text: str, pipeline: Compose) -> dict:
    """Run the test pipeline on a loaded image and its expression."""
    results = dict(text=text, **image.pipeline_inputs())
    if not image.source.startswith('array'):
        results['img_path'] = image.source
    return pipeline(results)


__all__ = [
    'InputType', 'build_test_pipeline', 'image_cache_key',
    'load_referring_image', 'model_input_size', 'prepare_inputs',
    'resolve_max_read_size', 'working_size'
]
