"""SAM as a promptable decode head (RSRefSeg,
https://arxiv.org/abs/2501.06809)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import DiceLoss
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..peft import apply_tuning, is_trainable
from ..sam import (SAM_PIXEL_MEAN, SAM_PIXEL_STD, SAMFastAttention,
                   build_sam_modules, check_rel_pos_mode,
                   enable_fast_attention, load_sam_checkpoint,
                   resolve_decoder_norm_eps, sam_arch_settings)

DEFAULT_ENCODER_TUNING = dict(
    mode='lora',
    rank=16,
    alpha=16,
    drop_rate=0.1,
    targets=['qkv', 'proj', 'lin1', 'lin2'])
#: Mask logit of an expression judged absent (sigmoid 0, finite in fp16).
ABSENT_LOGIT = -1e4


@MODELS.register_module()
class SAMPromptHead(BaseDecodeHead):
    """Segment Anything (SAM) decoding a referring mask from text prompts.

    RSRefSeg (`arXiv 2501.06809 <https://arxiv.org/abs/2501.06809>`_) feeds
    the prompts of :class:`~rsrefseg_mm.models.necks.TextFilterNeck` to SAM:
    the image is encoded by SAM's ViT (resized to SAM's input size without
    keeping the ratio, normalised with SAM's pixel mean/std here), the dense
    prompt goes through the prompt encoder's mask branch
    (``mask_downscaling``; ``no_mask_embed`` when there is none) and the mask
    decoder predicts a single mask (``multimask_output=False``) from the
    sparse prompts. Image ``i`` is decoded with prompt ``i``
    (:class:`~rsrefseg_mm.models.sam.sam_mask_decoder.PairedMaskDecoder`).

    One channel of sigmoid logits, thresholded at ``threshold`` in mmseg's
    ``postprocess_result`` (``num_classes=2``, ``out_channels=1`` and one
    mask token are fixed, not arguments). No ``conv_seg`` (it would be an
    unused parameter under DDP).

    Presence (``presence_cfg``; off by default and in the paper configs,
    whose outputs it leaves unchanged): for generalized referring, where an
    expression may refer to nothing in the image, SAM's IoU token gives a
    presence logit per expression (the IoU prediction head's output for the
    one mask, trained with a binary cross-entropy against "the target mask
    has a pixel", ``loss_presence``). At inference an expression whose
    presence probability is below ``presence_cfg.threshold`` gets an empty
    mask: its logits become :data:`ABSENT_LOGIT`. The probabilities are
    added to the inputs dict as ``presence`` (N,) for callers that report
    them.

    Order in ``__init__``: build SAM -> load ``checkpoint`` -> fast attention
    -> tuning of the image encoder (LoRA wraps loaded layers). The prompt
    encoder and mask decoder stay fully trainable. Parameters that never
    receive a gradient remain (point/box embeddings, IoU head, the unused
    multimask tokens), so distributed training needs
    ``find_unused_parameters=True`` (set in ``configs/_base_/models``).

    Args:
        sam_arch (str | dict): ``'vit_b'``, ``'vit_l'``, ``'vit_h'`` or a dict
            of :data:`~rsrefseg_mm.models.sam.sam_builder.SAM_DEFAULTS`
            keys (tiny demo models).
        checkpoint (str, optional): segment-anything's state dict (e.g.
            ``checkpoints/sam_vit_b_01ec64.pth``) or a Hugging Face SAM folder
            (``checkpoints/sam-vit-base``) or its ``model.safetensors``; see
            :mod:`~rsrefseg_mm.models.sam.sam_checkpoint`. None keeps the
            random init.
        strict_load (bool): ``checkpoint`` must hold every SAM tensor and
            nothing else (an error names the file, the arch and the first
            keys). False loads what fits and logs the rest as a warning.
            Defaults to True.
        decoder_norm_eps (float, optional): LayerNorm eps of the mask
            decoder's two-way transformer: segment-anything's 1e-5, or 1e-6
            for weights trained with transformers' ``SamModel``. None
            (default) takes the ``config.json`` value of a Hugging Face
            checkpoint (1e-6 when it has none) and 1e-5 otherwise.
        encoder_tuning (dict): ``mode`` in ``'frozen' | 'lora' | 'full'`` plus
            LoRA ``rank``, ``alpha``, ``drop_rate``, ``targets`` (default
            ``['qkv', 'proj', 'lin1', 'lin2']``); see
            :func:`~rsrefseg_mm.models.peft.tuning.apply_tuning`.
        fast_attn (bool): Encoder attention through
            ``F.scaled_dot_product_attention``. Defaults to True.
        rel_pos_mode (str, optional): How the fused attention applies SAM's
            relative positions: ``'mask'``, ``'chunked'`` (inference only),
            ``'augmented'``, or None to choose per device and autograd
            state (folded into q/k on GPUs; see
            :func:`~rsrefseg_mm.models.sam.default_rel_pos_mode`).
            Defaults to None. ``fast_attn`` also runs the windowed blocks
            of large grids without padding copies
            (:class:`~rsrefseg_mm.models.sam.SAMFastBlock`).
        with_cp (bool): Activation checkpointing of the encoder blocks while
            training (only when the encoder is trainable). Defaults to False.
        threshold (float): Foreground threshold on the sigmoid. 0.5.
        loss_decode (dict | list[dict]): mmseg losses. ``CrossEntropyLoss``
            with ``use_sigmoid=True`` sees pred (B,1,H,W) vs label (B,H,W),
            ignores 255; mmseg ``DiceLoss`` gets a (B,1,H,W) binary target
            with ignored pixels removed (see :meth:`loss_by_feat`).
        presence_cfg (dict, optional): ``loss_weight`` (default 1.0) and
            ``threshold`` (default 0.5) of the presence output (see above).
            None (default) disables it.
        ignore_index (int): Ignored label. 255.
        align_corners (bool): For resizing logits. False.
        init_cfg (dict, optional): Must not re-initialise SAM; None.
    """

    #: hot path for :func:`~rsrefseg_mm.engine.compile_hot_paths`: the SAM
    #: image encoder loop (fixed input size)
    compile_targets = ('_encode', )

    def __init__(self,
                 sam_arch: Union[str, dict] = 'vit_b',
                 checkpoint: Optional[str] = None,
                 strict_load: bool = True,
                 decoder_norm_eps: Optional[float] = None,
                 encoder_tuning: dict = DEFAULT_ENCODER_TUNING,
                 fast_attn: bool = True,
                 rel_pos_mode: Optional[str] = None,
                 with_cp: bool = False,
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
        settings = sam_arch_settings(sam_arch)
        dim = settings['prompt_embed_dim']
        super().__init__(
            in_channels=dim,
            channels=dim,
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
        self.sam_arch = sam_arch
        self.with_cp = with_cp
        self.presence_cfg = None
        if presence_cfg is not None:
            unknown = set(presence_cfg) - {'loss_weight', 'threshold'}
            if unknown:
                raise TypeError(f'presence_cfg: unknown keys {sorted(unknown)}'
                                " (expected 'loss_weight', 'threshold')")
            cfg = {'loss_weight': 1.0, 'threshold': 0.5, **presence_cfg}
            if not 0 < cfg['threshold'] < 1 or cfg['loss_weight'] < 0:
                raise ValueError('presence_cfg needs 0 < threshold < 1 and '
                                 f'loss_weight >= 0, got {presence_cfg}')
            self.presence_cfg = cfg
        self.image_size = settings['image_size']

        sam = build_sam_modules(settings)
        file_eps = None
        if checkpoint is not None:
            file_eps = load_sam_checkpoint(
                sam,
                checkpoint,
                arch_name=sam_arch if isinstance(sam_arch, str) else None,
                strict=strict_load)['decoder_norm_eps']
        self.decoder_norm_eps = resolve_decoder_norm_eps(
            decoder_norm_eps, file_eps)
        sam['mask_decoder'].set_transformer_norm_eps(self.decoder_norm_eps)
        self.image_encoder = sam['image_encoder']
        self.prompt_encoder = sam['prompt_encoder']
        self.mask_decoder = sam['mask_decoder']
        check_rel_pos_mode(rel_pos_mode)
        if fast_attn:
            enable_fast_attention(self.image_encoder)
            for m in self.image_encoder.modules():
                if isinstance(m, SAMFastAttention):
                    m.rel_pos_mode = rel_pos_mode
        elif rel_pos_mode is not None:
            raise ValueError('rel_pos_mode needs fast_attn=True')
        self.fast_attn = fast_attn

        self.encoder_tuning = apply_tuning(
            self.image_encoder,
            name='SAM image encoder',
            default_targets=DEFAULT_ENCODER_TUNING['targets'],
            **dict(encoder_tuning or dict(mode='full')))
        self.prompt_encoder.requires_grad_(True)
        self.mask_decoder.requires_grad_(True)

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
        raise RuntimeError('SAMPromptHead has no conv_seg; masks come '
                           'from the SAM mask decoder')

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize to SAM's input size (ratio not kept) and normalise.

        Args:
            images (Tensor): RGB pixel values 0-255 (B, 3, H, W).

        Returns:
            Tensor: (B, 3, S, S) with S = SAM image size.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('SAMPromptHead expects RGB images (B, 3, H, W), '
                             f'got {tuple(images.shape)}')
        images = images.float()
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode='bilinear',
                align_corners=False)
        return (images - self.pixel_mean) / self.pixel_std

    def _encode(self, x: Tensor) -> Tensor:
        """SAM ``ImageEncoderViT.forward`` with optional checkpointing."""
        enc = self.image_encoder
        x = enc.patch_embed(x)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for blk in enc.blocks:
            if use_cp:
                x = cp.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return enc.neck(x.permute(0, 3, 1, 2))

    def encode_image(self, images: Tensor) -> Tensor:
        """SAM image embeddings.

        A frozen encoder runs under ``torch.no_grad`` (no autograd graph).

        Args:
            images (Tensor): RGB 0-255 (B, 3, H, W).

        Returns:
            Tensor: (B, C, S/16, S/16), C = prompt_embed_dim.
        """
        x = self.preprocess(images)
        if is_trainable(self.image_encoder):
            return self._encode(x)
        with torch.no_grad():
            return self._encode(x)

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

    def forward(self, inputs: Dict[str, Tensor]) -> Tensor:
        """Decode low-resolution mask logits.

        Args:
            inputs (dict): ``images`` RGB 0-255 (B, 3, H, W) or their SAM
                ``image_embeddings`` (B, C, h, w) (:meth:`encode_image`),
                ``sparse_prompts`` (B, N, C), optional ``dense_prompts``
                (B, 1, Hm, Wm) or None (other neck outputs are ignored).

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

    def forward_with_presence(
            self, inputs: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Mask logits and presence logits, without gating.

        Args:
            inputs (dict): See :meth:`forward`.

        Returns:
            tuple[Tensor, Tensor]: Mask logits (B, 1, Hm, Wm) and presence
            logits (B,) (SAM's IoU prediction for the mask; meaningful when
            trained with ``presence_cfg``).
        """
        if not isinstance(inputs, dict) or 'sparse_prompts' not in inputs \
                or not ('images' in inputs or 'image_embeddings' in inputs):
            raise KeyError('SAMPromptHead.forward expects a dict with '
                           '`sparse_prompts` and `images` or '
                           '`image_embeddings` (RSRefSeg.prompt output)')
        if 'image_embeddings' in inputs:
            image_embeddings = inputs['image_embeddings']
        else:
            image_embeddings = self.encode_image(inputs['images'])
        sparse = inputs['sparse_prompts']
        B = image_embeddings.shape[0]
        if sparse.dim() != 3 or sparse.shape[0] != B or \
                sparse.shape[2] != self.prompt_encoder.embed_dim:
            raise ValueError(
                f'sparse prompts must be (B={B}, N, '
                f'{self.prompt_encoder.embed_dim}), got {tuple(sparse.shape)}')
        dense = self.embed_dense(inputs.get('dense_prompts'), B)
        masks, iou_pred = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False)
        return masks, iou_pred[:, 0]

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
