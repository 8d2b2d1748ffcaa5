"""SAM 2.1 as a promptable decode head (RSRefSeg 2,
https://github.com/KyanChen/RSRefSeg2)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmseg.registry import MODELS
from torch import Tensor

from ..peft import apply_tuning, is_trainable
from ..sam2 import (build_sam2_modules, load_sam2_checkpoint,
                    resolve_sam2_file, sam2_arch_settings)
from .base_prompt_head import BasePromptHead
from .dtype_safe import make_position_encodings_dtype_safe

#: LoRA on the Hiera trunk's attention projections and the FPN neck's
#: lateral convolutions (regular expressions on names inside
#: ``image_encoder``: a bare ``'proj'`` would also catch the trunk's
#: stage-transition ``blocks.N.proj`` linears).
DEFAULT_SAM2_ENCODER_TUNING = dict(
    mode='lora',
    rank=16,
    alpha=16,
    drop_rate=0.1,
    targets=[
        r'trunk\.blocks\.\d+\.attn\.(qkv|proj)',
        r'neck\.convs\.\d+\.conv',
    ])
#: What :meth:`SAM2PromptHead.encode_image` returns (the segmentor keeps
#: them per image, the predictors cache them).
SAM2_FEATURE_KEYS = ('image_embeddings', 'high_res_feats_s0',
                     'high_res_feats_s1')


@MODELS.register_module()
class SAM2PromptHead(BasePromptHead):
    """SAM 2.1 (Hiera) decoding a referring mask from text prompts.

    The SAM 2.1 head of RSRefSeg 2, a drop-in alternative to
    :class:`~rsrefseg_mm.models.decode_heads.SAMPromptHead`: same inputs
    (``images`` or their features, ``sparse_prompts`` (B, N, 256),
    ``dense_prompts`` (B, 1, 256, 256) for a 1024 input), same outputs (mask
    logits (B, 1, 256, 256), one mask, ``multimask_output=False``), losses,
    presence output and prediction (:class:`BasePromptHead`). The modules
    are the ``sam2`` package's (:func:`~rsrefseg_mm.models.sam2.
    build_sam2_modules`), run as ``SAM2ImagePredictor`` runs them on an
    image:

    1. the image, resized to ``image_size`` without keeping the ratio and
       normalised with ImageNet's mean / std (SAM's pixel mean / std in
       0-255), goes through the Hiera trunk and the FPN neck; the lowest
       resolution level is dropped (``scalp=1``), leaving stride 4, 8, 16;
    2. the stride-16 map plus ``no_mem_embed`` (what SAM 2 adds to an image
       without memory) is ``image_embeddings`` (B, C, S/16, S/16); the
       stride-4 and stride-8 maps go through the mask decoder's ``conv_s0``
       / ``conv_s1`` (as ``SAM2Base.forward_image`` does) into
       ``high_res_feats_s0`` (B, C/8, S/4, S/4) and ``high_res_feats_s1``
       (B, C/4, S/8, S/8);
    3. the dense prompt goes through the prompt encoder's mask branch
       (``no_mask_embed`` when there is none); the mask decoder reads the
       sparse prompts and adds the high-resolution maps while upscaling.
       Image ``i`` is decoded with prompt ``i`` (``repeat_image=False``).

    The decoder always takes its single-mask token: the fall-back to the
    best multimask output on unstable masks (``dynamic_multimask_via_
    stability``, which ``build_sam2`` turns on for interactive use) is off,
    as in SAM 2's training. Nothing is gated by the object score unless
    ``presence_cfg`` is set (``SAM2ImagePredictor`` does not gate either).

    Presence (``presence_cfg``): SAM 2's mask decoder predicts whether the
    object is in the image at all (the object-score token and its MLP,
    pretrained on occlusion); its logit is the presence logit, trained with
    ``loss_presence`` and gating as in ``SAMPromptHead`` (where SAM's IoU
    token serves instead).

    Order in ``__init__``: build -> load ``checkpoint`` -> tuning of the
    image encoder (LoRA wraps loaded layers). The prompt encoder, the mask
    decoder (``conv_s0`` / ``conv_s1`` included) and ``no_mem_embed`` stay
    fully trainable; the multimask tokens, IoU head and (without
    ``presence_cfg``) object-score head get no gradient, so distributed
    training needs ``find_unused_parameters=True``.

    Args:
        sam2_arch (str | dict): ``'tiny'``, ``'small'``, ``'base_plus'``,
            ``'large'`` (``sam2.1_hiera_{t,s,b+,l}.yaml``; RSRefSeg 2 uses
            ``'large'``) or a dict of :data:`~rsrefseg_mm.models.sam2.
            SAM2_DEFAULTS` keys (tiny test models). Defaults to ``'large'``.
        checkpoint (str, optional): The official ``sam2.1_hiera_*.pt`` or a
            Hugging Face ``facebook/sam2.1-hiera-*`` folder holding it; see
            :mod:`~rsrefseg_mm.models.sam2.sam2_checkpoint`. None keeps the
            random init.
        strict_load (bool): ``checkpoint`` must hold every tensor of the
            image model and nothing else but the video model's known
            tensors (an error names the file, the arch and the first keys).
            False loads what fits and logs the rest. Defaults to True.
        encoder_tuning (dict): ``mode`` in ``'frozen' | 'lora' | 'full'``
            plus LoRA ``rank``, ``alpha``, ``drop_rate``, ``targets``
            (default :data:`DEFAULT_SAM2_ENCODER_TUNING`: the trunk's
            ``attn.qkv`` / ``attn.proj`` and the neck's ``convs.N.conv``);
            see :func:`~rsrefseg_mm.models.peft.tuning.apply_tuning`.
        with_cp (bool): Activation checkpointing of the trunk blocks while
            training (only when the encoder is trainable). Defaults to
            False.
        threshold, loss_decode, presence_cfg, ignore_index, align_corners,
        init_cfg: See :class:`BasePromptHead`.
    """

    def __init__(self,
                 sam2_arch: Union[str, dict] = 'large',
                 checkpoint: Optional[str] = None,
                 strict_load: bool = True,
                 encoder_tuning: dict = DEFAULT_SAM2_ENCODER_TUNING,
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
        settings = sam2_arch_settings(sam2_arch)
        arch_name = sam2_arch if isinstance(sam2_arch, str) else None
        if checkpoint is not None:  # a missing file fails before building
            resolve_sam2_file(checkpoint, arch_name or 'custom')
        super().__init__(
            prompt_embed_dim=settings['prompt_embed_dim'],
            threshold=threshold,
            loss_decode=loss_decode,
            presence_cfg=presence_cfg,
            ignore_index=ignore_index,
            align_corners=align_corners,
            init_cfg=init_cfg)
        self.sam2_arch = sam2_arch
        self.with_cp = with_cp
        self.image_size = settings['image_size']

        sam2 = build_sam2_modules(settings)
        if checkpoint is not None:
            load_sam2_checkpoint(
                sam2, checkpoint, arch_name=arch_name, strict=strict_load)
        self.image_encoder = sam2.image_encoder
        self.prompt_encoder = sam2.prompt_encoder
        self.mask_decoder = sam2.mask_decoder
        # bf16 models (DeepSpeed's bf16 casts the whole model)
        make_position_encodings_dtype_safe(self.prompt_encoder)
        self.no_mem_embed = sam2.no_mem_embed

        self.encoder_tuning = apply_tuning(
            self.image_encoder,
            name='SAM 2 image encoder',
            default_targets=DEFAULT_SAM2_ENCODER_TUNING['targets'],
            **dict(encoder_tuning or dict(mode='full')))
        self.prompt_encoder.requires_grad_(True)
        self.mask_decoder.requires_grad_(True)
        self.no_mem_embed.requires_grad_(True)

    def _encode(self, x: Tensor) -> List[Tensor]:
        """``ImageEncoder.forward`` (Hiera, FPN neck, scalp) with optional
        checkpointing of the trunk blocks.

        Args:
            x (Tensor): Normalised images (B, 3, S, S).

        Returns:
            list[Tensor]: The neck's maps at stride 4, 8 and 16, each
            (B, C, S/stride, S/stride).
        """
        trunk = self.image_encoder.trunk
        x = trunk.patch_embed(x)  # (B, S/4, S/4, D)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        stages = []
        for i, blk in enumerate(trunk.blocks):
            if use_cp:
                x = cp.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in trunk.stage_ends:
                stages.append(x.permute(0, 3, 1, 2))
        features, _ = self.image_encoder.neck(stages)
        return features[:len(features) - self.image_encoder.scalp]

    def encode_image(self, images: Tensor) -> Dict[str, Tensor]:
        """SAM 2 image features, as ``SAM2ImagePredictor.set_image_batch``
        computes them.

        A frozen trunk and neck run under ``torch.no_grad``; ``conv_s0`` /
        ``conv_s1`` and ``no_mem_embed`` (trainable) keep their graph.

        Args:
            images (Tensor): RGB 0-255 (B, 3, H, W).

        Returns:
            dict[str, Tensor]: ``image_embeddings`` (B, C, S/16, S/16),
            ``high_res_feats_s0`` (B, C/8, S/4, S/4) and
            ``high_res_feats_s1`` (B, C/4, S/8, S/8), C = prompt_embed_dim.
        """
        x = self.preprocess(images)
        if is_trainable(self.image_encoder):
            feat_s0, feat_s1, feat = self._encode(x)
        else:
            with torch.no_grad():
                feat_s0, feat_s1, feat = self._encode(x)
        # sam2's FPN neck adds its top-down path in float32: back to the
        # model's dtype (bf16 when DeepSpeed casts the model)
        dtype = self.no_mem_embed.dtype
        feat_s0, feat_s1, feat = (
            f.to(dtype) for f in (feat_s0, feat_s1, feat))
        return dict(
            image_embeddings=feat + self.no_mem_embed.view(1, -1, 1, 1),
            high_res_feats_s0=self.mask_decoder.conv_s0(feat_s0),
            high_res_feats_s1=self.mask_decoder.conv_s1(feat_s1))

    def forward_with_presence(
            self, inputs: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Mask logits and presence logits, without gating.

        Args:
            inputs (dict): ``images`` RGB 0-255 (B, 3, H, W) or their
                :meth:`encode_image` outputs (all of
                :data:`SAM2_FEATURE_KEYS`), ``sparse_prompts`` (B, N, C),
                optional ``dense_prompts`` (B, 1, S/4, S/4) or None.

        Returns:
            tuple[Tensor, Tensor]: Mask logits (B, 1, S/4, S/4) and presence
            logits (B,) (SAM 2's object score; meaningful for referring
            when trained with ``presence_cfg``).
        """
        has_feats = isinstance(inputs, dict) and all(
            k in inputs for k in SAM2_FEATURE_KEYS)
        if not isinstance(inputs, dict) or 'sparse_prompts' not in inputs \
                or not (has_feats or 'images' in inputs):
            raise KeyError(
                'SAM2PromptHead.forward expects a dict with `sparse_prompts` '
                f'and `images` or all of {list(SAM2_FEATURE_KEYS)} '
                '(RSRefSeg.prompt output of SAM2PromptHead.encode_image)')
        feats = inputs if has_feats else self.encode_image(inputs['images'])
        image_embeddings = feats['image_embeddings']
        B = image_embeddings.shape[0]
        sparse = self.check_sparse_prompts(inputs['sparse_prompts'], B)
        dense = self.embed_dense(inputs.get('dense_prompts'), B)
        masks, _, _, object_scores = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=[
                feats['high_res_feats_s0'], feats['high_res_feats_s1']
            ])
        return masks, object_scores[:, 0]
