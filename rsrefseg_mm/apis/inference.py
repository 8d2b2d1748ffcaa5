"""Python API: run a trained RSRefSeg on one's own image and expression.

Example:
    >>> from rsrefseg_mm.apis import init_referring_model, inference_referring
    >>> model = init_referring_model('configs/rsrefseg/xxx.py', 'epoch_200.pth',
    ...                              device='cpu')
    >>> result = inference_referring(model, 'demo.jpg', 'the white tank')
    >>> mask = result.pred_sem_seg.data[0].numpy()   # (H, W) 0/1
    >>> heat = result.global_map.data[0].numpy()     # (H, W) in [0, 1]
"""
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.apis import init_model
from mmseg.structures import SegDataSample

from ..utils import drop_pretrained_checkpoints

ImageType = Union[str, Path, np.ndarray]
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


def _build_pipeline(cfg: Config, from_file: bool) -> Compose:
    """The config's test pipeline without annotation loading."""
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] not in ANNOTATION_TRANSFORMS
    ]
    has_loader = pipeline and pipeline[0]['type'] in IMAGE_LOADERS
    if from_file and not has_loader:
        pipeline = [dict(type='LoadReferringImageFromFile')] + pipeline
    elif not from_file and has_loader:
        pipeline = pipeline[1:]
    return Compose(pipeline)


def _prepare(img: ImageType, text: str, pipelines: dict, cfg: Config,
             index: int) -> dict:
    """Run the test pipeline; ``pipelines`` caches the two variants."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'sample {index}: the expression is empty ({text!r})')
    from_file = isinstance(img, (str, Path))
    if from_file:
        if not Path(img).is_file():
            raise FileNotFoundError(f'sample {index}: image {img} not found')
        results = dict(img_path=str(img), text=text)
    elif isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3:
        results = dict(
            img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2],
            text=text)
    else:
        raise ValueError(f'sample {index}: expected an image path or an '
                         f'(H, W, 3) BGR array, got {type(img)}')
    if from_file not in pipelines:
        pipelines[from_file] = _build_pipeline(cfg, from_file)
    return pipelines[from_file](results)


@torch.no_grad()
def inference_referring(
    model,
    imgs: Union[ImageType, Sequence[ImageType]],
    texts: Union[str, Sequence[str]],
) -> Union[SegDataSample, List[SegDataSample]]:
    """Segment the object each expression refers to.

    Args:
        model (nn.Module): From :func:`init_referring_model`.
        imgs (str | Path | np.ndarray | list): Image path(s) or (H, W, 3)
            BGR uint8 array(s) (as ``mmcv.imread`` returns).
        texts (str | list[str]): One expression per image.

    Returns:
        SegDataSample | list[SegDataSample]: Per sample ``pred_sem_seg``
        (1, H, W) 0/1 mask and ``seg_logits`` (1, H, W) foreground
        probability (mmseg stores the sigmoid for one-channel heads) at the
        original image size, ``global_map`` (1, H, W) the global text-filter
        activation in [0, 1], and the ``text`` in its metainfo.
    """
    single = isinstance(texts, str)
    if single:
        imgs, texts = [imgs], [texts]
    if len(imgs) != len(texts):
        raise ValueError(f'{len(imgs)} images but {len(texts)} expressions')
    results, pipelines = [], {}
    # one sample per forward: images of different sizes cannot be batched
    # by mmseg's post-processing
    for i, (img, text) in enumerate(zip(imgs, texts)):
        data = pseudo_collate([_prepare(img, text, pipelines, model.cfg, i)])
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        feats = model.extract_feat(inputs, metas)
        logits = model.decode_head.predict(feats, metas, model.test_cfg)
        sample = model.postprocess_result(logits, samples)[0]
        oh, ow = sample.ori_shape[:2]
        act = feats['global_map'][:1, None].float()
        act = F.interpolate(act, (oh, ow), mode='bilinear',
                            align_corners=False)[0]
        sample.set_data(dict(global_map=PixelData(data=act.cpu())))
        results.append(sample)
    return results[0] if single else results
