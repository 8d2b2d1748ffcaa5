"""Encode an image once, segment any number of expressions on it.

Example:
    >>> from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
    >>> model = init_referring_model('configs/rsrefseg/xxx.py', 'best.pth')
    >>> predictor = ReferringPredictor(model)
    >>> predictor.set_image('scene.tif', bands=(3, 2, 1))  # the towers run
    >>> tank, road = predictor.predict(['the white tank', 'the road'])
    >>> mask = tank.pred_sem_seg.data[0].numpy()  # (H, W) 0/1
"""
from typing import Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import Tensor

from rsrefseg_core.geo import DEFAULT_STRETCH, RasterImage
from rsrefseg_core.geo.stretch import StretchType
from rsrefseg_core.lru_cache import LRUCache
from ..datasets.text import check_expression
from .pipeline import (InputType, build_test_pipeline, image_cache_key,
                       load_referring_image, prepare_inputs,
                       resolve_max_read_size)

#: Stands in for the expression while the image alone goes through the
#: test pipeline (``PackReferringInputs`` requires one); each prediction
#: sets its own.
IMAGE_ONLY_TEXT = '<image>'


def attach_global_map(sample: SegDataSample, global_map: Tensor,
                      image: RasterImage) -> SegDataSample:
    """Store the global text-filter activation at the image size.

    Args:
        sample (SegDataSample): A post-processed prediction.
        global_map (Tensor): (h, w) activation in [0, 1] on the filter grid.
        image (RasterImage): The input (its nodata pixels get 0).

    Returns:
        SegDataSample: ``sample`` with ``global_map`` (1, H, W).
    """
    oh, ow = sample.ori_shape[:2]
    act = F.interpolate(
        global_map[None, None].float(), (oh, ow),
        mode='bilinear',
        align_corners=False)[0].cpu()
    if image.nodata_mask is not None:
        act[:, torch.as_tensor(image.nodata_mask)] = 0
    sample.set_data(dict(global_map=PixelData(data=act)))
    return sample


class ReferringPredictor:
    """Segment-anything's ``SamPredictor`` workflow for RSRefSeg.

    :meth:`set_image` runs everything that does not depend on the expression
    (the CLIP/SigLIP image tower and SAM's image encoder, nearly all of the
    model's FLOPs) once; :meth:`predict` then runs the text tower, the
    prompter and SAM's mask decoder for any number of expressions, decoded
    together in batches of at most ``max_batch``. The results equal
    :func:`~rsrefseg_mm.apis.inference_referring` on the same pairs.

    With ``cache_size > 0`` the embeddings of the last ``cache_size``
    images are kept (least recently used dropped first), keyed by the file's
    or array's content and the reading arguments, so that coming back to an
    image does not encode it again (:attr:`from_cache` tells).

    Rasters larger than the working resolution are decimated while they are
    read (``max_read_size``), so memory and time do not grow with the
    scene; the prediction and its georeference are then on that working
    grid (see :func:`rsrefseg_core.geo.read_image`).

    Args:
        model (nn.Module): From :func:`~rsrefseg_mm.apis.init_referring_model`
            (an ``RSRefSeg`` with ``cfg`` attached), in eval mode.
        max_batch (int): Most expressions decoded in one forward (bounds the
            memory of a long list). Defaults to 8.
        cache_size (int): Encoded images kept. Defaults to 0 (none).
        max_read_size (int | str | None): Longest side of raster reads:
            ``'auto'`` (default) is
            :data:`~rsrefseg_mm.apis.pipeline.WORKING_SIZE_FACTOR` times the
            model's input size; None reads at the file's resolution.
    """

    def __init__(self,
                 model,
                 max_batch: int = 8,
                 cache_size: int = 0,
                 max_read_size: Union[int, str, None] = 'auto') -> None:
        if max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {max_batch}')
        self.model = model
        self.max_batch = int(max_batch)
        self.cache = LRUCache(cache_size)
        self.pipeline = build_test_pipeline(model.cfg)
        self.max_read_size = resolve_max_read_size(max_read_size, model.cfg)
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        """Whether :meth:`set_image` has encoded an image."""
        return self.embeddings is not None

    def reset_image(self) -> None:
        """Forget the current image and its embeddings."""
        self.image: Optional[RasterImage] = None
        self.embeddings: Optional[dict] = None
        self._template: Optional[SegDataSample] = None
        #: Whether the last :meth:`set_image` found the image in the cache.
        self.from_cache = False

    @torch.no_grad()
    def set_image(self,
                  image: InputType,
                  bands: Optional[Sequence[int]] = None,
                  stretch: StretchType = DEFAULT_STRETCH,
                  roi: Optional[Sequence[float]] = None,
                  roi_crs: str = 'pixel',
                  name: Optional[str] = None) -> RasterImage:
        """Read and encode an image (or take it from the cache).

        Args:
            image (str | Path | np.ndarray | RasterImage): As the images of
                :func:`~rsrefseg_mm.apis.inference_referring` (JPEG, PNG,
                GeoTIFF, arrays).
            bands, stretch, roi, roi_crs: As in
                :func:`~rsrefseg_mm.apis.inference_referring`.
            name (str, optional): Shown instead of a file's path in
                messages.

        Returns:
            RasterImage: The image the model sees (georeference, nodata).
        """
        self.reset_image()
        key = image_cache_key(image, bands, stretch, roi, roi_crs) \
            if self.cache.size else None
        cached = self.cache.lookup(key)
        if cached is not None:
            self.image, self.embeddings, self._template = cached
            self.from_cache = True
            return self.image
        raster = load_referring_image(image, 0, bands, stretch, roi, roi_crs,
                                      name, self.max_read_size)
        data = self.model.data_preprocessor(
            pseudo_collate(
                [prepare_inputs(raster, IMAGE_ONLY_TEXT, self.pipeline)]),
            False)
        self.embeddings = self.model.encode_image(data['inputs'])
        self._template = data['data_samples'][0]
        self.image = raster
        self.cache.store(key, (raster, self.embeddings, self._template))
        return raster

    def _chunks(self, texts: List[str]) -> Iterator[List[str]]:
        for start in range(0, len(texts), self.max_batch):
            yield texts[start:start + self.max_batch]

    @torch.no_grad()
    def predict(
        self, texts: Union[str, Sequence[str]]
    ) -> Union[SegDataSample, List[SegDataSample]]:
        """Segment the object each expression refers to in the set image.

        Args:
            texts (str | Sequence[str]): One or more expressions.

        Returns:
            SegDataSample | list[SegDataSample]: As
            :func:`~rsrefseg_mm.apis.inference_referring` returns them
            (``pred_sem_seg``, ``seg_logits``, ``global_map``, metainfo with
            ``text`` and the georeference), one per expression.

        Raises:
            RuntimeError: No image was set.
            ValueError: An expression is empty.
        """
        if not self.is_image_set:
            raise RuntimeError('ReferringPredictor.predict: call set_image() '
                               'first')
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise ValueError('ReferringPredictor.predict: no expression')
        for i, text in enumerate(texts):
            check_expression(text, f'expression {i}')
        results = []
        for chunk in self._chunks(texts):
            samples = []
            for text in chunk:
                sample = self._template.clone()
                sample.set_metainfo(dict(text=text))
                samples.append(sample)
            metas = [s.metainfo for s in samples]
            logits, feats = self.model.decode(self.embeddings, chunk)
            logits = self.model.decode_head.predict_by_feat(logits, metas)
            samples = self.model.postprocess_result(logits, samples)
            for sample, global_map in zip(samples, feats['global_map']):
                results.append(
                    attach_global_map(sample, global_map, self.image))
        return results[0] if single else results
