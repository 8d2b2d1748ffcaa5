"""Python API: run a trained RSRefSeg on one's own image and expression.

Example:
    >>> from rsrefseg_mm.apis import init_referring_model, inference_referring
    >>> model = init_referring_model('configs/rsrefseg/xxx.py', 'best.pth',
    ...                              device='cpu')
    >>> result = inference_referring(model, 'demo.jpg', 'the white tank')
    >>> mask = result.pred_sem_seg.data[0].numpy()   # (H, W) 0/1
    >>> heat = result.global_map.data[0].numpy()     # (H, W) in [0, 1]
    >>> # a 16-bit 4-band GeoTIFF, bands 3, 2, 1 as R, G, B:
    >>> result = inference_referring(model, 'scene.tif', 'the white tank',
    ...                              bands=(3, 2, 1))
    >>> mask, transform, crs, nodata = georeferenced_mask(result)
"""
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from mmseg.apis import init_model
from mmseg.structures import SegDataSample

from rsrefseg_core.geo import DEFAULT_STRETCH
from rsrefseg_core.geo.stretch import StretchType
from rsrefseg_core.text import check_expression
from ..utils import (check_local_checkpoint, checkpoint_limits,
                     drop_pretrained_checkpoints, load_model_weights)
from .pipeline import InputType, load_referring_image, resolve_max_read_size
from .predictor import ReferringPredictor


def init_referring_model(config: Union[str, Path, Config],
                         checkpoint: Optional[str] = None,
                         device: str = 'cpu',
                         cfg_options: Optional[dict] = None,
                         strict: bool = True):
    """Build an RSRefSeg model from a config and a trained checkpoint.

    :func:`mmseg.apis.init_model` builds the model. When ``checkpoint`` is
    given, the pretrained CLIP/SAM paths of the config are not read (the
    trained checkpoint holds every weight), and the checkpoint is read by
    the safe loader (:mod:`rsrefseg_mm.utils.checkpoint`: the runner's
    allow-list; :func:`~rsrefseg_mm.utils.allow_unsafe_load` opts out for
    a trusted file; size limits with the config's
    ``max_checkpoint_expansion``; its weights' hash checked) and loaded
    strictly; its ``dataset_meta`` is kept on the model.

    Args:
        config (str | Path | Config): Config file or object.
        checkpoint (str, optional): Trained checkpoint (a local ``.pth``).
        device (str): ``'cpu'``, ``'cuda:0'``, ...
        cfg_options (dict, optional): Overrides merged into the config.
        strict (bool): Refuse a checkpoint whose tensors do not match the
            model. False loads the matching ones (mmengine logs the rest).
            Defaults to True.

    Returns:
        nn.Module: The segmentor in eval mode, with ``cfg`` attached.

    Raises:
        RemoteCheckpointError: ``checkpoint`` is a URL / remote path.
        UnsafeCheckpointError: The checkpoint needs globals outside the
            allow-list.
        CheckpointLimitError: It claims more memory than its size allows.
        ChangedCheckpointError: Its weights differ from the hash written
            with them.
        CheckpointMismatchError: ``strict`` and missing, unexpected or
            differently shaped tensors.
    """
    if not isinstance(config, Config):
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if checkpoint is not None:
        checkpoint = str(checkpoint)
        check_local_checkpoint(checkpoint)
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        drop_pretrained_checkpoints(config.model)
    else:
        print_log(
            'init_referring_model: no checkpoint given, weights are '
            'pretrained/random as in the config',
            logger='current')
        return init_model(config, None, device=device)
    model = init_model(config, None, device='cpu')
    with checkpoint_limits(config.get('max_checkpoint_expansion')):
        loaded = CheckpointLoader.load_checkpoint(
            checkpoint, map_location='cpu')
    load_model_weights(
        model,
        loaded,
        checkpoint,
        strict=strict,
        opt_out='init_referring_model(..., strict=False)')
    meta = loaded.get('meta', {})
    if 'dataset_meta' in meta:
        model.dataset_meta = meta['dataset_meta']
    return model.to(device).eval()


@torch.no_grad()
def inference_referring(
    model,
    imgs: Union[InputType, Sequence[InputType]],
    texts: Union[str, Sequence[str]],
    bands: Optional[Sequence[int]] = None,
    stretch: StretchType = DEFAULT_STRETCH,
    roi: Optional[Sequence[float]] = None,
    roi_crs: str = 'pixel',
    max_read_size: Union[int, str, None] = 'auto',
) -> Union[SegDataSample, List[SegDataSample]]:
    """Segment the object each expression refers to.

    Args:
        model (nn.Module): From :func:`init_referring_model`.
        imgs (str | Path | np.ndarray | RasterImage | list): Image path(s)
            (JPEG / PNG / GeoTIFF / any rasterio-readable file), (H, W, C)
            arrays of uint8 / uint16 / float (3-channel arrays without
            ``bands`` are **BGR**, as ``mmcv.imread`` returns; NaN and the
            mask of a ``np.ma.MaskedArray`` are nodata), or images already
            read with :func:`rsrefseg_core.geo.read_image`.
        texts (str | list[str]): One expression per image.
        bands (Sequence[int], optional): 1-based bands shown as R, G, B for
            multispectral inputs, e.g. ``(3, 2, 1)``.
        stretch (Sequence[float] | None): Percentile stretch of non-uint8
            data to 0-255 (default 2-98 %, nodata excluded); None passes
            through data already in 0-255.
        roi (Sequence[float], optional): Region of interest ``(xmin, ymin,
            xmax, ymax)`` cropped before inference (see
            :func:`rsrefseg_core.geo.roi_window`).
        roi_crs (str): ``'pixel'`` (default), ``'map'`` or a CRS such as
            ``'EPSG:4326'``.
        max_read_size (int | str | None): Longest side of raster reads
            (files read with rasterio); larger images or ROIs are decimated
            while they are read. ``'auto'`` (default): twice the model's
            input size (:func:`~rsrefseg_mm.apis.pipeline.working_size`);
            None: the file's resolution.

    Returns:
        SegDataSample | list[SegDataSample]: Per sample ``pred_sem_seg``
        (1, H, W) 0/1 mask and ``seg_logits`` (1, H, W) foreground
        probability (mmseg stores the sigmoid for one-channel heads) at the
        size of the image (or ROI) as read - the working grid for a
        decimated read -, ``global_map`` (1, H, W) the global text-filter
        activation in [0, 1], and in its metainfo the ``text`` and, when
        they apply, ``nodata_mask`` (nodata pixels are never foreground),
        ``geo_transform`` / ``crs`` (of the ROI when one was given, scaled
        to the working grid; see :func:`georeferenced_mask`),
        ``roi_window`` (pixels of the file) and ``stretch_ranges``.
    """
    single = isinstance(texts, str)
    if single:
        imgs, texts = [imgs], [texts]
    if len(imgs) != len(texts):
        raise ValueError(f'{len(imgs)} images but {len(texts)} expressions')
    for i, text in enumerate(texts):
        check_expression(text, f'sample {i}')
    # every distinct image is encoded once, its expressions decoded together
    groups: Dict[object, List[int]] = {}
    for i, img in enumerate(imgs):
        groups.setdefault(_image_key(img), []).append(i)
    max_size = resolve_max_read_size(max_read_size, model.cfg)
    predictor = ReferringPredictor(model, max_read_size=None)
    results: List[Optional[SegDataSample]] = [None] * len(texts)
    for indices in groups.values():
        image = load_referring_image(
            imgs[indices[0]],
            indices[0],
            bands,
            stretch,
            roi,
            roi_crs,
            max_size=max_size)
        if image.stretch_ranges is not None or image.nodata_pixels:
            print_log(
                f'inference_referring: {image.describe()}', logger='current')
        predictor.set_image(image)
        for i, sample in zip(indices,
                             predictor.predict([texts[i] for i in indices])):
            results[i] = sample
    return results[0] if single else results


def _image_key(img: InputType) -> object:
    """Inputs that are the same image: the same path, or the same object."""
    if isinstance(img, (str, Path)):
        return ('path', str(Path(img).resolve()))
    return ('object', id(img))


class GeoMask(NamedTuple):
    """A predicted mask with its georeference.

    Attributes:
        mask (np.ndarray): (H, W) uint8, 1 target, 0 background.
        transform (affine.Affine | None): Pixel -> map transform (of the
            region of interest when one was read); None when the input was
            not georeferenced.
        crs (rasterio.crs.CRS | None): Coordinate reference system.
        nodata_mask (np.ndarray | None): (H, W) bool, True where the input
            had no data.
    """
    mask: np.ndarray
    transform: Optional[object]
    crs: Optional[object]
    nodata_mask: Optional[np.ndarray]


def georeferenced_mask(result: SegDataSample) -> GeoMask:
    """``(mask, transform, crs, nodata_mask)`` of an inference result.

    Args:
        result (SegDataSample): From :func:`inference_referring`.

    Returns:
        GeoMask: Ready for :func:`rsrefseg_core.geo.write_mask_geotiff` /
        :func:`rsrefseg_core.geo.mask_geojson`.
    """
    mask = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    meta = result.metainfo
    return GeoMask(mask, meta.get('geo_transform'), meta.get('crs'),
                   meta.get('nodata_mask'))
