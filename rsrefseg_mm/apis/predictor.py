"""Encode an image once, segment any number of expressions on it.

Example:
    >>> from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
    >>> model = init_referring_model('configs/rsrefseg/xxx.py', 'best.pth')
    >>> predictor = ReferringPredictor(model)
    >>> predictor.set_image('scene.tif', bands=(3, 2, 1))  # the towers run
    >>> tank, road = predictor.predict(['the white tank', 'the road'])
    >>> mask = tank.pred_sem_seg.data[0].numpy()  # (H, W) 0/1
"""
import hashlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import Tensor

from rsrefseg_core.geo import RasterImage
from rsrefseg_core.lru_cache import LRUCache
from rsrefseg_core.predictor import (TEXT_CACHE_SIZE, BaseReferringPredictor,
                                     zero_nodata)
from rsrefseg_core.scene.predictor import WindowAnswers
from .pipeline import (build_test_pipeline, model_input_size, prepare_inputs,
                       working_size)
from .precision import autocast, check_precision

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
        image (RasterImage): The input (its nodata pixels get 0,
            :func:`rsrefseg_core.predictor.zero_nodata`).

    Returns:
        SegDataSample: ``sample`` with ``global_map`` (1, H, W).
    """
    oh, ow = sample.ori_shape[:2]
    act = F.interpolate(
        global_map[None, None].float(), (oh, ow),
        mode='bilinear',
        align_corners=False)[0].cpu()
    zero_nodata(
        image.nodata_mask,
        act,
        where=f'the global map of {sample.metainfo.get("text")!r} on '
        f'{image.source}')
    sample.set_data(dict(global_map=PixelData(data=act)))
    return sample


def _float(logits: Tensor, feats: dict) -> Tuple[Tensor, dict]:
    """Decoder outputs in float32 (post-processing stays in float32)."""
    return logits.float(), {
        k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in feats.items()
    }


class ReferringPredictor(BaseReferringPredictor):
    """Segment-anything's ``SamPredictor`` workflow for RSRefSeg.

    :meth:`set_image` runs everything that does not depend on the expression
    (the CLIP/SigLIP image tower and SAM's image encoder, nearly all of the
    model's FLOPs) once; :meth:`predict` then runs the text tower, the
    prompter and SAM's mask decoder for any number of expressions, decoded
    together in batches of at most ``max_batch``. The results equal
    :func:`~rsrefseg_mm.apis.inference_referring` on the same pairs.

    With ``cache_size > 0`` the embeddings of the last ``cache_size``
    images are kept (least recently used dropped first), keyed by the file's
    or array's content and the reading arguments (``max_read_size``
    included), so that coming back to an image does not encode it again
    (:attr:`from_cache` tells).

    Rasters larger than the working resolution are decimated while they are
    read (``max_read_size``), so memory and time do not grow with the
    scene; the prediction and its georeference are then on that working
    grid (see :func:`rsrefseg_core.geo.read_image`).

    The image / expression flow (argument checks, cache, expression
    validation, batches) is
    :class:`rsrefseg_core.predictor.BaseReferringPredictor`'s, shared with
    the ONNX Runtime predictor; this class runs the PyTorch model.

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
        precision (str): ``'fp32'`` (default) or ``'bf16'`` (autocast, on
            hardware with native bf16 only; see
            :mod:`rsrefseg_mm.apis.precision`).
    """

    def __init__(self,
                 model,
                 max_batch: int = 8,
                 cache_size: int = 0,
                 max_read_size: Union[int, str, None] = 'auto',
                 precision: str = 'fp32') -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.precision = check_precision(precision, self.device)
        self.pipeline = build_test_pipeline(model.cfg)
        super().__init__(
            max_batch=max_batch,
            cache_size=cache_size,
            max_read_size=max_read_size,
            auto_read_size=lambda: working_size(model.cfg))
        self.text_cache = LRUCache(TEXT_CACHE_SIZE)
        self._engine_key: Optional[str] = None
        self._templates: Dict[Tuple[int, int], SegDataSample] = {}

    @property
    def embeddings(self) -> Optional[dict]:
        """The set image's :meth:`RSRefSeg.encode_image` outputs."""
        return None if self.encoded is None else self.encoded[0]

    @torch.no_grad()
    def _encode(self, raster: RasterImage) -> Tuple[dict, SegDataSample]:
        """The image towers on ``raster``, and the data sample every
        expression's prediction starts from."""
        data = self.model.data_preprocessor(
            pseudo_collate(
                [prepare_inputs(raster, IMAGE_ONLY_TEXT, self.pipeline)]),
            False)
        with autocast(self.precision, self.device):
            embeddings = self.model.encode_image(data['inputs'])
        return embeddings, data['data_samples'][0]

    @torch.no_grad()
    def _decode(self, texts: List[str], count: int) -> List[SegDataSample]:
        """Text tower, prompter and SAM's decoder on the set image, then
        the segmentor's post-processing (nodata pixels are background)."""
        embeddings, template = self.encoded
        samples = []
        for text in texts:
            sample = template.clone()
            sample.set_metainfo(dict(text=text))
            samples.append(sample)
        metas = [s.metainfo for s in samples]
        with autocast(self.precision, self.device):
            logits, feats = self.model.decode(embeddings, texts)
        logits, feats = _float(logits, feats)
        logits = self.model.decode_head.predict_by_feat(logits, metas)
        samples = self.model.postprocess_result(logits, samples)
        if 'presence' in feats:  # a head trained with presence_cfg
            for sample, prob in zip(samples, feats['presence'].tolist()):
                sample.set_metainfo(dict(presence=prob))
        return [
            attach_global_map(sample, global_map, self.image)
            for sample, global_map in zip(samples[:count], feats['global_map'])
        ]

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
            ``text`` and the georeference; ``presence``, the probability
            that the referent is in the image, for a model with a presence
            output), one per expression.

        Raises:
            RuntimeError: No image was set.
            ValueError: No expression, or one is empty once cleaned
                (:func:`rsrefseg_core.text.check_expression`).
        """
        return super().predict(texts)

    # -- scenes (rsrefseg_core.scene.ScenePredictor) -------------------------
    @property
    def window_size(self) -> Tuple[int, int]:
        """Default scene window: the config's ``scene_window_size`` (the
        size of the dataset's images, e.g. 800 for RRSIS-D), else the
        model's input size."""
        size = self.model.cfg.get('scene_window_size') or \
            model_input_size(self.model.cfg)
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def mask_threshold(self) -> float:
        """Foreground above this probability (the decode head's)."""
        return float(self.model.decode_head.threshold)

    @property
    def presence_threshold(self) -> Optional[float]:
        """The presence threshold of a head trained with ``presence_cfg``,
        else None."""
        cfg = getattr(self.model.decode_head, 'presence_cfg', None)
        return None if not cfg else float(cfg['threshold'])

    @property
    def scene_presence_threshold(self) -> Optional[float]:
        """The presence threshold of a scene's windows
        (``presence_cfg.scene_threshold``), else None."""
        cfg = getattr(self.model.decode_head, 'presence_cfg', None)
        return None if not cfg else float(cfg['scene_threshold'])

    def engine_key(self) -> str:
        """sha256 of the model's parameters and buffers (computed once)."""
        if self._engine_key is None:
            digest = hashlib.sha256()
            for name, value in self.model.state_dict().items():
                digest.update(name.encode())
                digest.update(
                    value.detach().cpu().contiguous().reshape(-1).view(
                        torch.uint8).numpy().tobytes())
            self._engine_key = 'torch:' + digest.hexdigest()
        return self._engine_key

    @torch.no_grad()
    def encode_windows(self,
                       windows: List[RasterImage]) -> List[Dict[str, Any]]:
        """The image towers on scene windows, as one batch.

        Returns:
            list[dict]: Per window, :meth:`RSRefSeg.encode_image`'s outputs
            as NumPy arrays (without the batch dimension).
        """
        data = self.model.data_preprocessor(
            pseudo_collate([
                prepare_inputs(w, IMAGE_ONLY_TEXT, self.pipeline)
                for w in windows
            ]), False)
        with autocast(self.precision, self.device):
            embeddings = self.model.encode_image(data['inputs'])
        return [{k: v[i].float().cpu().numpy()
                 for k, v in embeddings.items()} for i in range(len(windows))]

    def _template(self, shape: Tuple[int, int]) -> SegDataSample:
        """A data sample of a window of ``shape`` (metas for resizing),
        from a blank window: nothing of a particular window (its nodata
        mask) reaches the others' post-processing."""
        if shape not in self._templates:
            blank = RasterImage(
                img=np.zeros((*shape, 3), np.uint8), source='window')
            data = self.model.data_preprocessor(
                pseudo_collate(
                    [prepare_inputs(blank, IMAGE_ONLY_TEXT, self.pipeline)]),
                False)
            self._templates[shape] = data['data_samples'][0]
        return self._templates[shape]

    def _text_embeddings(self, text: str) -> Tuple[torch.Tensor, ...]:
        """:meth:`RSRefSeg.encode_text` of one expression, kept in
        :attr:`text_cache`."""
        text_embeddings = self.text_cache.lookup(text)
        if text_embeddings is None:
            with autocast(self.precision, self.device):
                text_embeddings = self.model.encode_text([text], self.device)
            self.text_cache.store(text, text_embeddings)
        return text_embeddings

    @torch.no_grad()
    def text_filter(self, text: str) -> Tuple[np.ndarray, float, float]:
        """The global text filter of an expression: the sentence feature
        ``text_global`` (D,) and the filters' scale and bias, so that a
        window's filter map is ``sigmoid(s * cos(img_feats, t) + b)``.

        Raises:
            ValueError: The model's prompter has no text filter.
        """
        neck = self.model.neck
        if not hasattr(neck, 'filter_scale_bias'):
            raise ValueError(f'{type(neck).__name__} has no global text '
                             'filter (TextFilterNeck has)')
        text_global = self._text_embeddings(text)[0]
        scale, bias = neck.filter_scale_bias(
            self.model.backbone.logit_outputs())
        return text_global[0].float().cpu().numpy(), scale, bias

    @torch.no_grad()
    def decode_windows(self, encodings: List[Dict[str, Any]],
                       shape: Tuple[int, int], text: str) -> WindowAnswers:
        """One expression on encoded windows of ``shape``: the text tower
        runs once per expression (kept for the next windows), the prompter
        and SAM's decoder once per batch of windows.

        Returns:
            tuple: (h, w) float32 probability per window, as the
            segmentor's post-processing gives it (None for a window whose
            presence is below :attr:`presence_threshold`: it counts nothing,
            so it is not resized), and the (n,) presence probabilities
            (None for a model without presence).
        """
        device = self.device
        n = len(encodings)
        embeddings = {
            k: torch.from_numpy(np.stack([e[k] for e in encodings])).to(device)
            for k in encodings[0]
        }
        text_embeddings = self._text_embeddings(text)
        with autocast(self.precision, self.device):
            logits, feats = self.model.decode(
                embeddings, [text] * n,
                text_embeddings=tuple(
                    t.expand(n, *t.shape[1:]) for t in text_embeddings))
        logits, feats = _float(logits, feats)
        presence = feats.get('presence')
        if presence is not None:
            presence = presence.float().cpu().numpy()
        keep = list(range(n)) if presence is None else \
            np.flatnonzero(presence >= self.presence_threshold).tolist()
        probs: List[Optional[np.ndarray]] = [None] * n
        if keep:
            template = self._template(tuple(shape))
            samples = []
            for _ in keep:
                sample = template.clone()
                sample.set_metainfo(dict(text=text))
                samples.append(sample)
            kept = self.model.decode_head.predict_by_feat(
                logits[keep], [s.metainfo for s in samples])
            samples = self.model.postprocess_result(kept, samples)
            for i, sample in zip(keep, samples):
                probs[i] = sample.seg_logits.data[0].float().cpu().numpy()
        return probs, presence
