"""What every SAM-family prompt head of RSRefSeg shares: the binary mask
losses, the presence output, the dense-prompt branch and prediction.

:class:`~rsrefseg_mm.models.decode_heads.SAMPromptHead` (SAM) and
:class:`~rsrefseg_mm.models.decode_heads.SAM2PromptHead` (SAM 2.1) differ
only in how they encode the image and run the mask decoder
(:meth:`BasePromptHead.encode_image`,
:meth:`BasePromptHead.forward_with_presence`).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import DiceLoss
from mmseg.models.utils import resize
from mmseg.utils import SampleList
from torch import Tensor

from ..sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

#: Mask logit of an expression judged absent (sigmoid 0, finite in fp16).
ABSENT_LOGIT = -1e4


class BasePromptHead(BaseDecodeHead):
    """Base of the SAM-family prompt heads (not registered).

    One channel of sigmoid logits, thresholded at ``threshold`` in mmseg's
    ``postprocess_result`` (``num_classes=2``, ``out_channels=1``). No
    ``conv_seg`` (it would be an unused parameter under DDP). Subclasses
    build the SAM modules (``prompt_encoder`` with SAM's interface: ``
    mask_input_size``, ``image_embedding_size``, ``no_mask_embed``,
    ``mask_downscaling``, ``get_dense_pe``), set ``image_size`` and
    implement :meth:`encode_image` and :meth:`forward_with_presence`.

    Presence (``presence_cfg``, None by default): a presence logit per
    expression, trained with a binary cross-entropy against "the target
    mask has a pixel" (``loss_presence``); at inference an expression whose
    presence probability is below ``presence_cfg.threshold`` gets
    :data:`ABSENT_LOGIT` everywhere and the probabilities are added to the
    inputs dict as ``presence`` (N,). ``presence_cfg.scene_threshold``
    (default: ``threshold``) is the stricter threshold of the windows of a
    whole scene (:class:`rsrefseg_core.scene.ScenePredictor`): a scene is
    hundreds of windows, nearly all without the referent, and one false
    window paints a false mask.

    Args:
        prompt_embed_dim (int): SAM's prompt / decoder width.
        threshold (float): Foreground threshold on the sigmoid.
        loss_decode (dict | list[dict]): mmseg losses (see
            :meth:`loss_by_feat`).
        presence_cfg (dict, optional): ``loss_weight`` (default 1.0),
            ``threshold`` (default 0.5) and ``scene_threshold`` (default:
            ``threshold``) of the presence output.
        ignore_index (int): Ignored label.
        align_corners (bool): For resizing logits.
        init_cfg (dict, optional): Must not re-initialise SAM; None.
    """

    def __init__(self,
                 prompt_embed_dim: int,
                 threshold: float = 0.5,
                 loss_decode: Union[dict, Sequence[dict]] = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=True,
                     avg_non_ignore=True,
                     loss_weight=5.0),
                 presence_cfg: Optional[dict] = None,
                 ignore_index: int = 255,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            in_channels=prompt_embed_dim,
            channels=prompt_embed_dim,
            num_classes=2,
            out_channels=1,
            threshold=threshold,
            dropout_ratio=0,
            loss_decode=loss_decode,
            ignore_index=ignore_index,
            align_corners=align_corners,
            init_cfg=init_cfg)
        # BaseDecodeHead always builds a 1x1 classifier; SAM's decoder is the
        # classifier here, so drop it (unused parameters break DDP).
        del self.conv_seg
        self.presence_cfg = None
        if presence_cfg is not None:
            keys = {'loss_weight', 'threshold', 'scene_threshold'}
            unknown = set(presence_cfg) - keys
            if unknown:
                raise TypeError(f'presence_cfg: unknown keys {sorted(unknown)}'
                                f' (expected {sorted(keys)})')
            cfg = {'loss_weight': 1.0, 'threshold': 0.5, **presence_cfg}
            cfg.setdefault('scene_threshold', cfg['threshold'])
            if not 0 < cfg['threshold'] <= cfg['scene_threshold'] < 1 or \
                    cfg['loss_weight'] < 0:
                raise ValueError(
                    'presence_cfg needs 0 < threshold <= scene_threshold < 1 '
                    f'and loss_weight >= 0, got {presence_cfg}')
            self.presence_cfg = cfg
        self.register_buffer(
            'pixel_mean',
            torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1),
            persistent=False)
        self.register_buffer(
            'pixel_std',
            torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1),
            persistent=False)

    def cls_seg(self, feat: Tensor) -> Tensor:
        """Not used: SAM's mask decoder replaces ``conv_seg``."""
        raise RuntimeError(f'{type(self).__name__} has no conv_seg; masks '
                           'come from the SAM mask decoder')

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize to SAM's input size (ratio not kept) and normalise.

        Args:
            images (Tensor): RGB pixel values 0-255 (B, 3, H, W).

        Returns:
            Tensor: (B, 3, S, S) with S = SAM image size.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f'{type(self).__name__} expects RGB images '
                             f'(B, 3, H, W), got {tuple(images.shape)}')
        images = images.float()
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode='bilinear',
                align_corners=False)
        # in the encoder's dtype: bf16 when DeepSpeed casts the model
        return ((images - self.pixel_mean) / self.pixel_std).to(
            next(self.image_encoder.parameters()).dtype)

    def encode_image(self, images: Tensor) -> Union[Tensor, Dict[str, Tensor]]:
        """The image's SAM features, independent of the expression: a
        tensor (stored as ``image_embeddings`` by the segmentor) or a dict
        of (B, ...) tensors merged into the segmentor's embeddings."""
        raise NotImplementedError

    def forward_with_presence(
            self, inputs: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Mask logits (B, 1, Hm, Wm) and presence logits (B,), ungated."""
        raise NotImplementedError

    def embed_dense(self, dense_prompts: Optional[Tensor],
                    batch_size: int) -> Tensor:
        """Encode the dense prompt with SAM's mask branch.

        Args:
            dense_prompts (Tensor | None): Mask logits (B, 1, Hm, Wm); (Hm, Wm)
                must be the prompt encoder's ``mask_input_size``.
            batch_size (int): B, used when there is no dense prompt.

        Returns:
            Tensor: (B, C, h, w) dense embeddings (``no_mask_embed`` when
            ``dense_prompts`` is None).
        """
        pe = self.prompt_encoder
        if dense_prompts is None:
            h, w = pe.image_embedding_size
            return pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                batch_size, -1, h, w)
        expected = tuple(pe.mask_input_size)
        if tuple(dense_prompts.shape[1:]) != (1, ) + expected:
            raise ValueError(
                f'dense prompts must be (B, 1, {expected[0]}, {expected[1]}) '
                f'for SAM image size {self.image_size} (set the neck\'s '
                f'dense_prompt_size), got {tuple(dense_prompts.shape)}')
        return pe.mask_downscaling(dense_prompts)

    def check_sparse_prompts(self, sparse: Tensor, batch_size: int) -> Tensor:
        """``sparse`` if it is (B, N, C) with C the prompt width, else a
        ValueError naming the expected shape."""
        dim = self.prompt_encoder.embed_dim
        if sparse.dim() != 3 or sparse.shape[0] != batch_size or \
                sparse.shape[2] != dim:
            raise ValueError(f'sparse prompts must be (B={batch_size}, N, '
                             f'{dim}), got {tuple(sparse.shape)}')
        return sparse

    def forward(self, inputs: Dict[str, Tensor]) -> Tensor:
        """Decode low-resolution mask logits.

        Args:
            inputs (dict): ``images`` RGB 0-255 (B, 3, H, W) or their SAM
                features (``image_embeddings`` (B, C, h, w) and the other
                keys of :meth:`encode_image`), ``sparse_prompts``
                (B, N, C), optional ``dense_prompts`` (B, 1, Hm, Wm) or None
                (other neck outputs are ignored).

        Returns:
            Tensor: Mask logits (B, 1, Hm, Wm) (256x256 for SAM at 1024).
            With ``presence_cfg``, outside training, the logits of an
            expression judged absent are :data:`ABSENT_LOGIT` and
            ``inputs['presence']`` (B,) holds the presence probabilities.
        """
        masks, presence = self.forward_with_presence(inputs)
        if self.presence_cfg is None or self.training:
            return masks
        prob = presence.float().sigmoid()
        inputs['presence'] = prob
        absent = prob < self.presence_cfg['threshold']
        return masks.masked_fill(absent[:, None, None, None], ABSENT_LOGIT)

    def loss(self, inputs: Dict[str, Tensor], batch_data_samples: SampleList,
             train_cfg: dict) -> dict:
        """Mask losses (:meth:`loss_by_feat`), plus with ``presence_cfg``
        ``loss_presence`` (BCE of the presence logits against "the target
        mask has a pixel") and ``acc_presence`` (percent)."""
        masks, presence = self.forward_with_presence(inputs)
        losses = self.loss_by_feat(masks, batch_data_samples)
        if self.presence_cfg is not None:
            target = torch.stack([
                (ds.gt_sem_seg.data == 1).any() for ds in batch_data_samples
            ]).to(presence.device, torch.float32)
            losses['loss_presence'] = self.presence_cfg['loss_weight'] * \
                F.binary_cross_entropy_with_logits(presence.float(), target)
            with torch.no_grad():
                hit = (presence.float() > 0) == target.bool()
                losses['acc_presence'] = hit.float().mean() * 100.0
        return losses

    def loss_by_feat(self, seg_logits: Tensor,
                     batch_data_samples: SampleList) -> dict:
        """Binary losses on logits upsampled to the label size.

        Follows ``BaseDecodeHead.loss_by_feat`` with two binary fixes:
        mmseg's ``DiceLoss`` one-hot encodes a (B,H,W) label against a
        1-channel prediction as the *background* channel, so Dice losses get
        the (B,1,H,W) foreground target with ignored pixels pushed out
        (logit -> -1e4, target 0); and ``acc_seg`` is the thresholded pixel
        accuracy (top-1 over a single channel is meaningless).

        Args:
            seg_logits (Tensor): (B, 1, Hm, Wm) logits.
            batch_data_samples (list[SegDataSample]): With ``gt_sem_seg``
                (0 background, 1 target, 255 ignore).

        Returns:
            dict[str, Tensor]: Loss terms and ``acc_seg``.
        """
        seg_label = self._stack_batch_gt(batch_data_samples)  # (B,1,H,W)
        seg_logits = resize(
            input=seg_logits.float(),
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        seg_label = seg_label.squeeze(1).long()  # (B,H,W)
        valid = seg_label != self.ignore_index
        losses_decode = self.loss_decode if isinstance(
            self.loss_decode, nn.ModuleList) else [self.loss_decode]
        loss = dict()
        for loss_fn in losses_decode:
            if isinstance(loss_fn, DiceLoss):
                target = (seg_label == 1) & valid
                pred = seg_logits.masked_fill(~valid[:, None], -1e4)
                value = loss_fn(
                    pred,
                    target[:, None].long(),
                    ignore_index=self.ignore_index)
            else:
                value = loss_fn(
                    seg_logits, seg_label, ignore_index=self.ignore_index)
            if loss_fn.loss_name in loss:
                loss[loss_fn.loss_name] = loss[loss_fn.loss_name] + value
            else:
                loss[loss_fn.loss_name] = value
        with torch.no_grad():
            pred = (seg_logits[:, 0].sigmoid() > self.threshold).long()
            n_valid = valid.sum().clamp(min=1)
            loss['acc_seg'] = ((pred == seg_label) & valid).sum().float() \
                * 100.0 / n_valid
        return loss

    def predict_by_feat(self, seg_logits: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        """Resize logits to the (padded) input size, as mmseg does.

        Args:
            seg_logits (Tensor): (B, 1, Hm, Wm).
            batch_img_metas (list[dict]): Image metas.

        Returns:
            Tensor: (B, 1, H, W) logits; the segmentor resizes them to
            ``ori_shape`` and thresholds the sigmoid.
        """
        return super().predict_by_feat(seg_logits.float(), batch_img_metas)
