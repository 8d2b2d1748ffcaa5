"""RSRefSeg segmentor (https://arxiv.org/abs/2501.06809)."""
import hashlib
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor

from rsrefseg_core.lru_cache import LRUCache
from rsrefseg_core.predictor import check_max_batch, zero_nodata
from rsrefseg_core.scene.grid import check_window_args, window_boxes
from ..decode_heads.sam_prompt_head import ABSENT_LOGIT


def count_parameters(module: nn.Module) -> Tuple[int, int]:
    """Return (trainable, total) parameter counts of ``module``."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def check_test_cfg(test_cfg: ConfigDict) -> None:
    """``mode`` is ``'whole'`` or ``'slide'``; ``'slide'`` needs
    ``crop_size`` and ``stride`` (the scene predictor's rules,
    :func:`rsrefseg_core.scene.check_window_args`) and a positive
    ``window_batch`` when given.

    Raises:
        ValueError: Naming the key and the value.
    """
    mode = test_cfg.get('mode', 'whole')
    if mode not in ('whole', 'slide'):
        raise ValueError("RSRefSeg: test_cfg.mode must be 'whole' or "
                         f"'slide', got {mode!r}")
    if mode != 'slide':
        return
    try:
        check_window_args(test_cfg.get('crop_size'), test_cfg.get('stride'))
        check_max_batch(test_cfg.get('window_batch', 4), 'window_batch')
    except ValueError as e:
        raise ValueError(f"RSRefSeg: test_cfg.mode='slide': {e}") from None


def tensor_digest(x: Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes (its content key: equal
    for equal tensors, wherever they live; the tensor is not kept)."""
    digest = hashlib.sha256(repr((tuple(x.shape), str(x.dtype))).encode())
    data = x.detach().contiguous().reshape(-1).view(torch.uint8)
    digest.update(data.cpu().numpy().tobytes())
    return digest.hexdigest()


@MODELS.register_module()
class RSRefSeg(EncoderDecoder):
    """Referring segmentation: text-filtered SigLIP / CLIP features prompt SAM.

    `RSRefSeg: Referring Remote Sensing Image Segmentation with Foundation
    Models <https://arxiv.org/abs/2501.06809>`_. Keeps mmseg
    ``EncoderDecoder``'s ``loss`` / ``predict`` / ``_forward`` flow; the
    features are a dict instead of a tuple of maps:

    .. code:: text

        encode_image(inputs)            # once per image
            backbone.encode_image  -> img_feats (B, D, h, w), img_global
            [decode_head.encode_image -> SAM embeddings (B, C, S/16, S/16)]
        prompt(embeddings, texts)       # per expression
            backbone.encode_text -> text_feats, text_global, text_mask
            neck -> sparse_prompts (N, P, C), dense_prompts, activation maps
        decode_head.forward -> (N, 1, Hm, Wm) logits
        (decode = prompt + decode_head.forward; extract_feat = encode_image
        without SAM + prompt, one expression per image, for loss / predict)

    One image serves any number of expressions (its embeddings are
    expanded, not copied), see :meth:`decode`. A neck with
    ``pos_embed='sam'`` gets the head's SAM positional encoding
    (``decode_head.prompt_encoder.pe_layer``). There is no auxiliary head.

    ``test_cfg=dict(mode='slide', crop_size=(h, w), stride=(sh, sw))`` runs
    the model on windows of the input at its own resolution (a test
    pipeline without the whole-image ``Resize``), for scenes larger than
    what the model was trained on; see :meth:`slide_inference`.
    Trainable / total parameter counts per component are logged at init.

    Optional grounding loss on the global text filter
    (``filter_loss_weight > 0``, off by default and not in the paper): the
    global filter logits (B, h, w) are trained with a binary cross-entropy
    against the target mask area-averaged onto the filter grid (soft
    targets; ignored pixels left out), logged as ``filter.loss_bce``. It
    gives the image and text towers a direct signal to align patches with
    the expression, which a from-scratch model (the tiny CPU demo) otherwise
    only gets through SAM; with pretrained towers it is not needed.

    Args:
        backbone (dict): Image+text backbone config (``SigLIPBackbone``,
            ``CLIPBackbone``).
        neck (dict): Prompter config (``TextFilterNeck``).
        decode_head (dict): Head config (``SAMPromptHead``).
        train_cfg (dict, optional): Unused, kept for mmseg.
        test_cfg (dict, optional): ``dict(mode='whole')`` (default); add
            ``group_by_image=True`` to encode each distinct image once
            across consecutive test samples (see :meth:`encode_decode`).
            Or ``dict(mode='slide', crop_size=(h, w), stride=(sh, sw),
            window_batch=4)`` (see :meth:`slide_inference`).
        data_preprocessor (dict, optional): ``SegDataPreProcessor`` with
            ``mean=None, std=None, bgr_to_rgb=True`` (RGB 0-255 inputs).
        auxiliary_head: Must be None.
        filter_loss_weight (float): Weight of the global-filter grounding
            loss (see above). 0 (default) disables it.
        pretrained: Must be None (mmseg's ``init_model`` passes None); use
            the backbone's and head's ``checkpoint``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 backbone: ConfigType,
                 neck: ConfigType,
                 decode_head: ConfigType,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = dict(mode='whole'),
                 data_preprocessor: OptConfigType = None,
                 auxiliary_head: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 filter_loss_weight: float = 0.0,
                 init_cfg: OptMultiConfig = None) -> None:
        if pretrained is not None:
            raise ValueError(
                'RSRefSeg takes its pretrained weights from '
                '`backbone.checkpoint` (SigLIP / CLIP) and '
                '`decode_head.checkpoint` '
                f'(SAM), not from `pretrained` (got {pretrained!r})')
        if neck is None:
            raise ValueError(
                'RSRefSeg needs a neck (the text-filter prompter)')
        if auxiliary_head is not None:
            raise ValueError('RSRefSeg does not support an auxiliary head')
        if filter_loss_weight < 0:
            raise ValueError('filter_loss_weight must be >= 0, got '
                             f'{filter_loss_weight}')
        test_cfg = ConfigDict(mode='whole') if test_cfg is None else \
            ConfigDict(test_cfg)
        check_test_cfg(test_cfg)
        super().__init__(
            backbone=backbone,
            decode_head=decode_head,
            neck=neck,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.filter_loss_weight = float(filter_loss_weight)
        #: Images encoded by the ``group_by_image`` test path (a counter).
        self.image_encodings = 0
        if getattr(self.neck, 'pos_embed', None) == 'sam':
            # the prompter adds SAM's pretrained shared image positional
            # encoding, the one the mask decoder uses, to its grid
            self.neck.set_pos_embed_layer(
                self.decode_head.prompt_encoder.pe_layer)
        self.log_parameter_counts()

    def parameter_counts(self) -> Dict[str, Tuple[int, int]]:
        """(trainable, total) per component and per direct sub-module."""
        counts = {'all': count_parameters(self)}
        for comp in ('backbone', 'neck', 'decode_head'):
            module = getattr(self, comp)
            counts[comp] = count_parameters(module)
            for name, child in module.named_children():
                n = count_parameters(child)
                if n[1]:
                    counts[f'{comp}.{name}'] = n
        return counts

    def log_parameter_counts(self) -> None:
        """Log trainable / total parameters of each component."""
        lines = [
            f'  {name:<36s} trainable {t / 1e6:9.3f} M / total '
            f'{n / 1e6:9.3f} M'
            for name, (t, n) in self.parameter_counts().items()
        ]
        print_log(
            'RSRefSeg parameters:\n' + '\n'.join(lines), logger='current')

    @staticmethod
    def _texts(batch_img_metas: Optional[List[dict]],
               batch_size: int) -> List[str]:
        if batch_img_metas is None:
            raise ValueError(
                'RSRefSeg needs the referring expressions: pass data_samples '
                "whose metainfo has 'text' (PackReferringInputs adds it)")
        if len(batch_img_metas) != batch_size:
            raise ValueError(f'{len(batch_img_metas)} metas for a batch of '
                             f'{batch_size} images')
        texts = []
        for i, meta in enumerate(batch_img_metas):
            text = meta.get('text') if hasattr(meta, 'get') else None
            if not isinstance(text, str):
                where = meta.get('img_path', f'sample {i}') if hasattr(
                    meta, 'get') else f'sample {i}'
                raise ValueError(
                    f"RSRefSeg: metainfo of {where} has no 'text' string "
                    f'(got {text!r}); pack samples with PackReferringInputs '
                    "or add 'text' to PackSegInputs(meta_keys=...)")
            texts.append(text)
        return texts

    def encode_image(self,
                     inputs: Tensor,
                     with_sam: bool = True) -> Dict[str, Tensor]:
        """Everything of the images that does not depend on the expression.

        Encode once, then answer any number of expressions with
        :meth:`decode` (:class:`~rsrefseg_mm.apis.ReferringPredictor`).

        Args:
            inputs (Tensor): RGB 0-255 (B, 3, H, W).
            with_sam (bool): Also run SAM's image encoder. False keeps the
                images instead, for SAM to encode inside the head (the
                training and test order of :meth:`extract_feat`).

        Returns:
            dict: ``img_feats`` (B, D, h, w) and ``img_global`` (B, D) of the
            image tower, and ``image_embeddings`` (B, C, S/16, S/16) of SAM
            (with a SAM 2 head also its ``high_res_feats_s0`` / ``_s1``) or
            ``images`` (the inputs).
        """
        img_global, img_feats = self.backbone.encode_image(inputs)
        embeddings = dict(img_feats=img_feats, img_global=img_global)
        if with_sam:
            sam = self.decode_head.encode_image(inputs)
            # SAM 2 heads also return their high-resolution maps
            embeddings.update(
                sam if isinstance(sam, dict) else dict(image_embeddings=sam))
        else:
            embeddings['images'] = inputs
        return embeddings

    @staticmethod
    def _select_images(embeddings: Dict[str, Tensor], num_texts: int,
                       image_index: Optional[Tensor]) -> Dict[str, Tensor]:
        """The image embeddings of each expression, as views when possible.

        One image serves every expression through ``expand`` (no copy);
        otherwise ``image_index`` (N,) picks the image of each expression,
        and by default expression i belongs to image i.
        """
        num_images = embeddings['img_feats'].shape[0]
        selected = {}
        for key, value in embeddings.items():
            if image_index is not None:
                selected[key] = value[image_index.to(value.device)]
            elif num_images == num_texts:
                selected[key] = value
            elif num_images == 1:
                selected[key] = value.expand(num_texts, *value.shape[1:])
            else:
                raise ValueError(
                    f'{num_texts} expressions for {num_images} images: pass '
                    'image_index (the image of each expression)')
        return selected

    def encode_text(self, texts: List[str],
                    device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """The text tower on distinct expressions.

        Returns:
            tuple: ``text_global`` (N, D), ``text_feats`` (N, L, D) and
            ``text_mask`` (N, L), one row per expression of ``texts`` (each
            distinct expression encoded once).
        """
        unique = list(dict.fromkeys(texts))
        encoded = self.backbone.encode_text(unique, device=device)
        if len(unique) < len(texts):
            rows = torch.tensor([unique.index(t) for t in texts],
                                device=encoded[0].device)
            encoded = tuple(t[rows] for t in encoded)
        return encoded

    def prompt(
        self,
        embeddings: Dict[str, Tensor],
        texts: List[str],
        image_index: Optional[Tensor] = None,
        text_embeddings: Optional[Tuple[Tensor,
                                        ...]] = None) -> Dict[str, Tensor]:
        """Text tower and prompter on encoded images.

        Args:
            embeddings (dict): From :meth:`encode_image`.
            texts (list[str]): N expressions.
            image_index (Tensor, optional): (N,) image of each expression;
                see :meth:`_select_images`.
            text_embeddings (tuple, optional): :meth:`encode_text` of
                ``texts``, computed once and reused (a scene's windows):
                the text tower does not run.

        Returns:
            dict: The head's inputs: the selected ``images`` or
            ``image_embeddings`` and the neck outputs (``sparse_prompts``
            (N, P, C), ``dense_prompts``, ``local_maps``, ``global_map``,
            ``global_logits``).
        """
        image = self._select_images(embeddings, len(texts), image_index)
        if text_embeddings is None:
            text_embeddings = self.encode_text(texts,
                                               image['img_feats'].device)
        text_global, text_feats, text_mask = text_embeddings
        prompts = self.neck(
            dict(
                img_feats=image.pop('img_feats'),
                img_global=image.pop('img_global'),
                text_feats=text_feats,
                text_global=text_global,
                text_mask=text_mask,
                **self.backbone.logit_outputs()))
        return dict(**image, **prompts)

    def decode(
        self,
        embeddings: Dict[str, Tensor],
        texts: List[str],
        image_index: Optional[Tensor] = None,
        text_embeddings: Optional[Tuple[Tensor, ...]] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Mask logits of expressions on images encoded by
        :meth:`encode_image`.

        Args:
            embeddings (dict): From :meth:`encode_image`.
            texts (list[str]): N expressions.
            image_index (Tensor, optional): (N,) image of each expression.
            text_embeddings (tuple, optional): See :meth:`prompt`.

        Returns:
            tuple: Low-resolution logits (N, 1, Hm, Wm) and the
            :meth:`prompt` outputs (activation maps for visualisation).
        """
        x = self.prompt(embeddings, texts, image_index, text_embeddings)
        return self.decode_head.forward(x), x

    def extract_feat(
            self,
            inputs: Tensor,
            batch_img_metas: Optional[List[dict]] = None) -> Dict[str, Tensor]:
        """Run the towers and the prompter (one expression per image).

        Args:
            inputs (Tensor): RGB 0-255 (B, 3, H, W).
            batch_img_metas (list[dict]): Metas with ``text``.

        Returns:
            dict: ``images`` (the inputs) and the neck outputs
            (``sparse_prompts``, ``dense_prompts``, ``local_maps``,
            ``global_map``, ``global_logits``).
        """
        texts = self._texts(batch_img_metas, inputs.shape[0])
        return self.prompt(self.encode_image(inputs, with_sam=False), texts)

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Logits (B, 1, H, W) at the padded input size.

        With ``test_cfg.group_by_image=True`` the image embeddings of the
        last ``test_cfg.image_cache_size`` (default 4) distinct input images
        are kept (see :meth:`cached_image_embeddings`), so consecutive
        expressions on one image (RefSegRS, RISBench and RRSIS-D list them
        together) encode it once.
        """
        if not self.test_cfg.get('group_by_image', False):
            x = self.extract_feat(inputs, batch_img_metas)
        else:
            texts = self._texts(batch_img_metas, inputs.shape[0])
            x = self.prompt(self.cached_image_embeddings(inputs), texts)
        return self.decode_head.predict(x, batch_img_metas, self.test_cfg)

    @property
    def image_cache(self) -> LRUCache:
        """Embeddings of the last ``test_cfg.image_cache_size`` (default 4)
        distinct input images of the ``group_by_image`` test path, keyed by
        :func:`tensor_digest` (least recently used dropped first; the same
        :class:`~rsrefseg_core.lru_cache.LRUCache` as the predictors').
        Dropped whenever the model switches between training and
        evaluation or loads weights."""
        size = int(self.test_cfg.get('image_cache_size', 4))
        cache = self.__dict__.get('_image_cache')
        if cache is None or cache.size != size:
            cache = self.__dict__['_image_cache'] = LRUCache(size)
        return cache

    def drop_image_cache(self) -> None:
        """Forget the cached image embeddings (the weights change)."""
        self.__dict__.pop('_image_cache', None)

    def cached_image_embeddings(self, inputs: Tensor) -> Dict[str, Tensor]:
        """:meth:`encode_image` of ``inputs``, reusing the embeddings of
        images whose content (pixels, shape, dtype) equals that of one
        encoded before in this mode.

        Each distinct image missing from the cache is encoded once (a
        repeat within the batch too) and counted in ``image_encodings``.
        The cache keeps a digest of the image, never the input, and its
        own copy of each image's embeddings (no view into the batch).

        Args:
            inputs (Tensor): (B, 3, H, W) preprocessed images.

        Returns:
            dict: As :meth:`encode_image` (``with_sam=True``), (B, ...)
            each.
        """
        cache = self.image_cache
        keys = [tensor_digest(image) for image in inputs]
        rows: Dict[str, Dict[str, Tensor]] = {}
        for key in keys:
            row = cache.lookup(key)
            if row is not None:
                rows[key] = row
        missing: Dict[str, int] = {}  # first index of each new image
        for i, key in enumerate(keys):
            if key not in rows:
                missing.setdefault(key, i)
        if missing:
            encoded = self.encode_image(inputs[list(missing.values())])
            self.image_encodings += len(missing)
            for j, key in enumerate(missing):
                # a copy of the row: a view would keep the batch alive
                rows[key] = {k: v[j:j + 1].clone() for k, v in encoded.items()}
                cache.store(key, rows[key])
        first = rows[keys[0]]
        return {k: torch.cat([rows[key][k] for key in keys]) for k in first}

    def train(self, mode: bool = True):
        """Set the mode; cached image embeddings (``group_by_image``) are
        dropped at every switch, since training changes the weights."""
        self.drop_image_cache()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        # new weights: the cached image embeddings are stale
        self.drop_image_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Decode-head losses (``decode.loss_*``, ``decode.acc_seg``), the
        neck's own terms (``neck.*``: ``neck.loss(x, data_samples)`` of a
        neck that has one, e.g. ``CascadedPrompter``) and the optional
        filter loss."""
        metas = [ds.metainfo for ds in data_samples]
        x = self.extract_feat(inputs, metas)
        losses = self._decode_head_forward_train(x, data_samples)
        neck_loss = getattr(self.neck, 'loss', None)
        if neck_loss is not None:
            losses.update(add_prefix(neck_loss(x, data_samples), 'neck'))
        if self.filter_loss_weight > 0:
            losses['filter.loss_bce'] = self.filter_loss_weight * \
                self.filter_loss(x['global_logits'], data_samples)
        return losses

    def filter_loss(self, global_logits: Tensor,
                    data_samples: SampleList) -> Tensor:
        """BCE of the global filter logits against the target mask.

        Args:
            global_logits (Tensor): (B, h, w) logits of the global filter;
                the grid covers the whole (padded) input.
            data_samples (list[SegDataSample]): ``gt_sem_seg`` (1, H, W)
                with 1 = target, ``decode_head.ignore_index`` = ignored.

        Returns:
            Tensor: Mean BCE over the cells, weighted by their share of
            non-ignored pixels; a cell's target is its target share.
        """
        gt = torch.stack([ds.gt_sem_seg.data for ds in data_samples])
        gt = gt.to(global_logits.device)
        ignore = getattr(self.decode_head, 'ignore_index', 255)
        valid = (gt != ignore).to(global_logits.dtype)
        fg = (gt == 1).to(global_logits.dtype)
        size = tuple(global_logits.shape[-2:])
        valid = F.adaptive_avg_pool2d(valid, size)[:, 0]
        target = F.adaptive_avg_pool2d(fg, size)[:, 0] / valid.clamp(min=1e-6)
        loss = F.binary_cross_entropy_with_logits(
            global_logits, target.clamp(0, 1), weight=valid, reduction='sum')
        return loss / valid.sum().clamp(min=1.0)

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Low-resolution logits (B, 1, Hm, Wm) without post-processing."""
        metas = None if data_samples is None else [
            ds.metainfo for ds in data_samples
        ]
        x = self.extract_feat(inputs, metas)
        return self.decode_head.forward(x)

    def slide_inference(self, inputs: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        """Sliding-window inference at the input's resolution.

        Windows of ``test_cfg.crop_size`` every ``test_cfg.stride`` pixels
        (:func:`rsrefseg_core.scene.grid.window_boxes`, the grid of the
        scene predictor) are encoded in batches of
        ``test_cfg.window_batch`` (default 4) and decoded with the sample's
        expression, whose text tower runs once per sample. Each window's
        logits are resized (bilinear) to the window and turned into
        probabilities, which are averaged where windows overlap. A window
        that the presence output (``decode_head.presence_cfg``) judges
        absent contributes nothing: a pixel covered only by such windows
        gets probability 0. With one window covering the image the result
        equals whole-image inference.

        Args:
            inputs (Tensor): RGB 0-255 (B, 3, H, W) at the resolution to
                scan (the test pipeline does not resize the whole image).
            batch_img_metas (list[dict]): Metas with ``text``.

        Returns:
            Tensor: (B, 1, H, W) logits of the averaged probabilities
            (:data:`ABSENT_LOGIT` where no window found the referent).
        """
        texts = self._texts(batch_img_metas, inputs.shape[0])
        B, _, H, W = inputs.shape
        boxes = window_boxes(H, W, self.test_cfg.crop_size,
                             self.test_cfg.stride)
        batch = int(self.test_cfg.get('window_batch', 4))
        prob_sum = inputs.new_zeros((B, 1, H, W), dtype=torch.float32)
        count = inputs.new_zeros((B, 1, H, W), dtype=torch.float32)
        for b in range(B):
            # the expression's text tower runs once for all its windows
            text = self.encode_text([texts[b]], inputs.device)
            for start in range(0, len(boxes), batch):
                chunk = boxes[start:start + batch]
                crops = torch.cat([
                    inputs[b:b + 1, :, y1:y2, x1:x2]
                    for y1, y2, x1, x2 in chunk
                ])
                logits, x = self.decode(
                    self.encode_image(crops), [texts[b]] * len(chunk),
                    text_embeddings=tuple(
                        t.expand(len(chunk), *t.shape[1:]) for t in text))
                present = x['presence'] >= \
                    self.decode_head.presence_cfg['threshold'] \
                    if 'presence' in x else [True] * len(chunk)
                for (y1, y2, x1,
                     x2), logit, keep in zip(chunk, logits, present):
                    if not keep:
                        continue
                    prob = F.interpolate(
                        logit[None].float(), (y2 - y1, x2 - x1),
                        mode='bilinear',
                        align_corners=self.align_corners)[0].sigmoid()
                    prob_sum[b, :, y1:y2, x1:x2] += prob
                    count[b, :, y1:y2, x1:x2] += 1
        prob = prob_sum / count.clamp(min=1)
        logits = torch.logit(prob, eps=1e-7)
        return logits.masked_fill(count == 0, ABSENT_LOGIT)

    def postprocess_result(self,
                           seg_logits: Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        """mmseg's post-processing, then nodata pixels set to background.

        A sample whose metainfo has ``nodata_mask`` ((H, W) bool at the
        original size, from the raster loader) gets ``pred_sem_seg`` 0 and
        foreground probability (``seg_logits``) 0 there: where the input has
        no data the object cannot be.
        """
        data_samples = super().postprocess_result(seg_logits, data_samples)
        for i, sample in enumerate(data_samples):
            zero_nodata(
                sample.metainfo.get('nodata_mask'),
                sample.pred_sem_seg.data,
                sample.seg_logits.data,
                where=sample.metainfo.get('img_path', f'sample {i}'))
        return data_samples
