"""SAM as a promptable decode head (RSRefSeg,
https://arxiv.org/abs/2501.06809)."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmseg.registry import MODELS
from torch import Tensor

from ..peft import apply_tuning, is_trainable
from ..sam import (SAMFastAttention, build_sam_modules, check_rel_pos_mode,
                   enable_fast_attention, load_sam_checkpoint,
                   resolve_decoder_norm_eps, sam_arch_settings)
# ABSENT_LOGIT: re-exported (callers import it from here)
from .base_prompt_head import ABSENT_LOGIT, BasePromptHead  # noqa: F401
from .dtype_safe import make_position_encodings_dtype_safe

DEFAULT_ENCODER_TUNING = dict(
    mode='lora',
    rank=16,
    alpha=16,
    drop_rate=0.1,
    targets=['qkv', 'proj', 'lin1', 'lin2'])


@MODELS.register_module()
class SAMPromptHead(BasePromptHead):
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
        super().__init__(
            prompt_embed_dim=settings['prompt_embed_dim'],
            threshold=threshold,
            loss_decode=loss_decode,
            presence_cfg=presence_cfg,
            ignore_index=ignore_index,
            align_corners=align_corners,
            init_cfg=init_cfg)
        self.sam_arch = sam_arch
        self.with_cp = with_cp
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
        # bf16 models (DeepSpeed's bf16 casts the whole model)
        make_position_encodings_dtype_safe(self.prompt_encoder)
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
        B = image_embeddings.shape[0]
        sparse = self.check_sparse_prompts(inputs['sparse_prompts'], B)
        dense = self.embed_dense(inputs.get('dense_prompts'), B)
        masks, iou_pred = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False)
        return masks, iou_pred[:, 0]
