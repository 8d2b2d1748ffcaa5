"""Python API: run a trained RSRefSeg on one's own image and expression.

Example:
    >>> from rsrefseg_mm.apis import init_referring_model, inference_referring
    >>> model = init_referring_model('configs/rsrefseg/xxx.py', 'epoch_200.pth',
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
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.apis import init_model
from mmseg.structures import SegDataSample

from ..datasets.text import check_expression
from ..geo import (DEFAULT_STRETCH, RasterImage, array_to_image,
                   read_image)
from ..geo.stretch import StretchType
from ..utils import drop_pretrained_checkpoints

InputType = Union[str, Path, np.ndarray, RasterImage]
# Transforms that need annotations; dropped for inference.
ANNOTATION_TRANSFORMS = ('LoadReferringAnnotations', 'LoadAnnotations')
IMAGE_LOADERS = ('LoadReferringImageFromFile', 'LoadImageFromFile')


def init_referring_model(config: Union[str, Path, Config],
                         checkpoint: Optional[str] = None,
                         device: str = 'cpu',
                         cfg_options: Optional[dict] = None):
    """Build an RSRefSeg model from a config and a trained checkpoint.

    Thin wrapper of :func:`mmseg.apis.init_model`. When ``checkpoint`` is
    given, the pretrained CLIP/SAM paths of the config are not read (the
    trained checkpoint holds every weight).

    Args:
        config (str | Path | Config): Config file or object.
        checkpoint (str, optional): Trained checkpoint (``.pth``).
        device (str): ``'cpu'``, ``'cuda:0'``, ...
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        nn.Module: The segmentor in eval mode, with ``cfg`` attached.
    """
    if not isinstance(config, Config):
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        drop_pretrained_checkpoints(config.model)
    else:
        print_log('init_referring_model: no checkpoint given, weights are '
                  'pretrained/random as in the config', logger='current')
    return init_model(config, checkpoint, device=device)


def _build_pipeline(cfg: Config) -> Compose:
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
                         roi_crs: str = 'pixel') -> RasterImage:
    """Read one input of :func:`inference_referring` (same arguments).

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
        return read_image(img, bands, stretch, roi, roi_crs)
    if isinstance(img, np.ndarray):
        if roi is not None and roi_crs != 'pixel':
            raise ValueError(f'sample {index}: an array has no georeference;'
                             ' give the roi in pixels')
        return array_to_image(img, bands, stretch, roi, name=f'array {index}')
    raise ValueError(f'sample {index}: expected an image path, an (H, W, C) '
                     f'array or a RasterImage, got {type(img).__name__}')


def _prepare(image: RasterImage, text: str, pipeline: Compose,
             index: int) -> dict:
    """Run the test pipeline on a loaded image and its expression."""
    results = dict(text=text, **image.pipeline_inputs())
    if not image.source.startswith('array'):
        results['img_path'] = image.source
    return pipeline(results)


@torch.no_grad()
def inference_referring(
    model,
    imgs: Union[InputType, Sequence[InputType]],
    texts: Union[str, Sequence[str]],
    bands: Optional[Sequence[int]] = None,
    stretch: StretchType = DEFAULT_STRETCH,
    roi: Optional[Sequence[float]] = None,
    roi_crs: str = 'pixel',
) -> Union[SegDataSample, List[SegDataSample]]:
    """Segment the object each expression refers to.

    Args:
        model (nn.Module): From :func:`init_referring_model`.
        imgs (str | Path | np.ndarray | RasterImage | list): Image path(s)
            (JPEG / PNG / GeoTIFF / any rasterio-readable file), (H, W, C)
            arrays of uint8 / uint16 / float (3-channel arrays without
            ``bands`` are **BGR**, as ``mmcv.imread`` returns; NaN and the
            mask of a ``np.ma.MaskedArray`` are nodata), or images already
            read with :func:`rsrefseg_mm.geo.read_image`.
        texts (str | list[str]): One expression per image.
        bands (Sequence[int], optional): 1-based bands shown as R, G, B for
            multispectral inputs, e.g. ``(3, 2, 1)``.
        stretch (Sequence[float] | None): Percentile stretch of non-uint8
            data to 0-255 (default 2-98 %, nodata excluded); None passes
            through data already in 0-255.
        roi (Sequence[float], optional): Region of interest ``(xmin, ymin,
            xmax, ymax)`` cropped before inference (see
            :func:`rsrefseg_mm.geo.roi_window`).
        roi_crs (str): ``'pixel'`` (default), ``'map'`` or a CRS such as
            ``'EPSG:4326'``.

    Returns:
        SegDataSample | list[SegDataSample]: Per sample ``pred_sem_seg``
        (1, H, W) 0/1 mask and ``seg_logits`` (1, H, W) foreground
        probability (mmseg stores the sigmoid for one-channel heads) at the
        image (or ROI) size, ``global_map`` (1, H, W) the global text-filter
        activation in [0, 1], and in its metainfo the ``text`` and, when
        they apply, ``nodata_mask`` (nodata pixels are never foreground),
        ``geo_transform`` / ``crs`` (of the ROI when one was given; see
        :func:`georeferenced_mask`), ``roi_window`` and ``stretch_ranges``.
    """
    single = isinstance(texts, str)
    if single:
        imgs, texts = [imgs], [texts]
    if len(imgs) != len(texts):
        raise ValueError(f'{len(imgs)} images but {len(texts)} expressions')
    results, pipeline = [], None
    # one sample per forward: images of different sizes cannot be batched
    # by mmseg's post-processing
    for i, (img, text) in enumerate(zip(imgs, texts)):
        check_expression(text, f'sample {i}')
        image = load_referring_image(img, i, bands, stretch, roi, roi_crs)
        if image.stretch_ranges is not None or image.nodata_pixels:
            print_log(f'inference_referring: {image.describe()}',
                      logger='current')
        if pipeline is None:
            pipeline = _build_pipeline(model.cfg)
        data = pseudo_collate([_prepare(image, text, pipeline, i)])
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        feats = model.extract_feat(inputs, metas)
        logits = model.decode_head.predict(feats, metas, model.test_cfg)
        sample = model.postprocess_result(logits, samples)[0]
        oh, ow = sample.ori_shape[:2]
        act = feats['global_map'][:1, None].float()
        act = F.interpolate(act, (oh, ow), mode='bilinear',
                            align_corners=False)[0].cpu()
        if image.nodata_mask is not None:
            act[:, torch.as_tensor(image.nodata_mask)] = 0
        sample.set_data(dict(global_map=PixelData(data=act)))
        results.append(sample)
    return results[0] if single else results


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
        GeoMask: Ready for :func:`rsrefseg_mm.geo.write_mask_geotiff` /
        :func:`rsrefseg_mm.geo.mask_geojson`.
    """
    mask = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    meta = result.metainfo
    return GeoMask(mask, meta.get('geo_transform'), meta.get('crs'),
                   meta.get('nodata_mask'))
