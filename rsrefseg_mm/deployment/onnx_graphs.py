"""The two halves of RSRefSeg as exportable modules.

:class:`ImageEncoderGraph` holds everything that does not depend on the
expression (CLIP/SigLIP image tower, SAM image encoder);
:class:`DecoderGraph` the rest (text tower, text-filter prompter, SAM prompt
encoder and mask decoder), for N expressions on one encoded image. Both take
and return tensors only, so ``torch.onnx.export`` traces them.

A head with a presence output (``decode_head.presence_cfg``) is traced
through its eval ``forward``, as PyTorch inference runs it: the decoder
graph also returns ``presence`` (N,), the sigmoid probability that each
referent is in the image, and the logits of an expression below
``presence_cfg.threshold`` are already
:data:`~rsrefseg_mm.models.decode_heads.sam_prompt_head.ABSENT_LOGIT`
(empty mask) in the graph; a runtime applies no gating of its own.
"""
from typing import Tuple

import torch.nn as nn
from torch import Tensor

from ..models.backbones import SigLIPBackbone


class ImageEncoderGraph(nn.Module):
    """``RSRefSeg.encode_image`` on tensors.

    Args:
        model (nn.Module): An ``RSRefSeg`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        """Encode one image.

        Args:
            image (Tensor): (1, 3, H, W) RGB 0-255 at the model's input size.

        Returns:
            tuple[Tensor, Tensor]: ``img_feats`` (1, D, h, w) of the image
            tower and SAM's ``image_embeddings`` (1, C, S/16, S/16).
        """
        emb = self.model.encode_image(image, with_sam=True)
        return emb['img_feats'], emb['image_embeddings']


class DecoderGraph(nn.Module):
    """``RSRefSeg.decode`` on token ids, for N expressions on one image.

    Args:
        model (nn.Module): An ``RSRefSeg`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.siglip = isinstance(model.backbone, SigLIPBackbone)
        self.presence = getattr(model.decode_head, 'presence_cfg',
                                None) is not None

    @property
    def input_names(self) -> Tuple[str, ...]:
        """Graph inputs: SigLIP needs the token mask (its pad id is EOS)."""
        names = ('img_feats', 'image_embeddings', 'token_ids')
        return names + ('token_mask', ) if self.siglip else names

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Graph outputs: ``presence`` for a head with ``presence_cfg``."""
        names = ('logits', 'global_map')
        return names + ('presence', ) if self.presence else names

    def text(self, token_ids: Tensor, token_mask: Tensor = None):
        """(text_global (N, D), text_feats (N, L, D), text_mask (N, L))."""
        backbone = self.model.backbone
        if self.siglip:
            text_global, text_feats = backbone.text_model(token_ids)
            return text_global, text_feats, token_mask
        return backbone.text(token_ids)

    def forward(self,
                img_feats: Tensor,
                image_embeddings: Tensor,
                token_ids: Tensor,
                token_mask: Tensor = None) -> Tuple[Tensor, ...]:
        """Decode N expressions.

        Args:
            img_feats (Tensor): (1, D, h, w) from the image encoder.
            image_embeddings (Tensor): (1, C, s, s) from the image encoder.
            token_ids (Tensor): (N, L) int64 ids of the expressions.
            token_mask (Tensor, optional): (N, L) bool, SigLIP only.

        Returns:
            tuple[Tensor, ...]: Mask logits (N, 1, Hm, Wm), the global
            filter activation (N, h, w) in [0, 1] and, with presence, the
            presence probabilities (N,) (the logits of an expression below
            the presence threshold are ``ABSENT_LOGIT``).
        """
        n = token_ids.shape[0]
        text_global, text_feats, text_mask = self.text(token_ids, token_mask)
        prompts = self.model.neck(
            dict(
                img_feats=img_feats.expand(n, -1, -1, -1),
                text_feats=text_feats,
                text_global=text_global,
                text_mask=text_mask,
                **self.model.backbone.logit_outputs()))
        head_inputs = dict(
            image_embeddings=image_embeddings.expand(n, -1, -1, -1),
            sparse_prompts=prompts['sparse_prompts'],
            dense_prompts=prompts['dense_prompts'])
        # eval forward: with presence_cfg, gated logits and
        # head_inputs['presence'] (as in PyTorch inference)
        logits = self.model.decode_head.forward(head_inputs)
        if not self.presence:
            return logits, prompts['global_map']
        if 'presence' not in head_inputs:
            raise RuntimeError('DecoderGraph: the decode head gave no '
                               'presence (export needs the model in eval '
                               'mode)')
        return logits, prompts['global_map'], head_inputs['presence']
