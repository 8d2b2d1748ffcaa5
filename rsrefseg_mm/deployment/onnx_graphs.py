"""RSRefSeg as three exportable modules.

:class:`ImageEncoderGraph` holds everything of an image that does not
depend on the expression (CLIP/SigLIP image tower, SAM image encoder);
:class:`TextEncoderGraph` everything of an expression that does not depend
on the image (the CLIP/SigLIP text tower); :class:`DecoderGraph` the rest
(the prompter, SAM's prompt encoder and mask decoder), for N encoded
expressions on one encoded image. A runtime runs the text graph once per
expression and keeps its outputs, so the sliding windows of a scene (one
decoder run each) do not run the text tower again. All three take and
return tensors only, so ``torch.onnx.export`` traces them.

A head with a presence output (``decode_head.presence_cfg``) is traced
through its eval ``forward``, as PyTorch inference runs it: the decoder
graph also returns ``presence`` (N,), the sigmoid probability that each
referent is in the image, and the logits of an expression below
``presence_cfg.threshold`` are already
:data:`~rsrefseg_mm.models.decode_heads.sam_prompt_head.ABSENT_LOGIT`
(empty mask) in the graph; a runtime applies no gating of its own.
"""
from typing import Optional, Tuple

import torch.nn as nn
from torch import Tensor

from ..models.backbones import SigLIPBackbone
from ..models.decode_heads.sam2_prompt_head import (SAM2_FEATURE_KEYS,
                                                    SAM2PromptHead)

#: Outputs of the text encoder graph, inputs of the decoder graph.
TEXT_OUTPUTS = ('text_global', 'text_feats', 'text_mask')


def head_feature_names(model: nn.Module) -> Tuple[str, ...]:
    """What the decode head's ``encode_image`` gives: SAM's
    ``image_embeddings``, plus the two high-resolution maps of a SAM 2.1
    head (:data:`~rsrefseg_mm.models.decode_heads.sam2_prompt_head.
    SAM2_FEATURE_KEYS`)."""
    if isinstance(model.decode_head, SAM2PromptHead):
        return tuple(SAM2_FEATURE_KEYS)
    return ('image_embeddings', )


class ImageEncoderGraph(nn.Module):
    """``RSRefSeg.encode_image`` on tensors.

    Args:
        model (nn.Module): An ``RSRefSeg`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Graph outputs: the image tower's, then the SAM head's."""
        return ('img_feats', ) + head_feature_names(self.model)

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        """Encode one image.

        Args:
            image (Tensor): (1, 3, H, W) RGB 0-255 at the model's input size.

        Returns:
            tuple[Tensor, ...]: ``img_feats`` (1, D, h, w) of the image
            tower and SAM's ``image_embeddings`` (1, C, S/16, S/16); a
            SAM 2.1 head adds ``high_res_feats_s0`` (1, C/8, S/4, S/4) and
            ``high_res_feats_s1`` (1, C/4, S/8, S/8).
        """
        emb = self.model.encode_image(image, with_sam=True)
        return tuple(emb[name] for name in self.output_names)


class TextEncoderGraph(nn.Module):
    """``RSRefSeg.encode_text`` on token ids, for N expressions.

    Args:
        model (nn.Module): An ``RSRefSeg`` in eval mode.

    Raises:
        NotImplementedError: A ``SigLIPBackbone(text_padding='none')``
            (each expression at its own length: a loop over lengths that a
            traced graph of fixed length would not repeat).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.siglip = isinstance(model.backbone, SigLIPBackbone)
        padding = getattr(model.backbone, 'text_padding', 'context')
        if self.siglip and padding != 'context':
            raise NotImplementedError(
                f"ONNX export of SigLIPBackbone(text_padding={padding!r}) "
                'is not supported: the text graph runs expressions padded '
                "to the context length (text_padding='context') and would "
                'answer differently')

    @property
    def input_names(self) -> Tuple[str, ...]:
        """Graph inputs: SigLIP needs the token mask (its pad id is EOS)."""
        return ('token_ids', 'token_mask') if self.siglip else \
            ('token_ids', )

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Graph outputs: the text tower's, in ``encode_text``'s order."""
        return TEXT_OUTPUTS

    def forward(self,
                token_ids: Tensor,
                token_mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """Encode N expressions.

        Args:
            token_ids (Tensor): (N, L) int64 ids of the expressions.
            token_mask (Tensor, optional): (N, L) bool, SigLIP only (passed
                through as ``text_mask``).

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``text_global`` (N, D),
            ``text_feats`` (N, L, D) and ``text_mask`` (N, L), True at the
            tokens of the expression.
        """
        backbone = self.model.backbone
        if self.siglip:
            text_global, text_feats = backbone.text_model(token_ids)
            return text_global, text_feats, token_mask
        return tuple(backbone.text(token_ids))


class DecoderGraph(nn.Module):
    """``RSRefSeg.decode`` on encoded expressions, for N expressions on one
    encoded image.

    Args:
        model (nn.Module): An ``RSRefSeg`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.presence = getattr(model.decode_head, 'presence_cfg',
                                None) is not None
        self.high_res = head_feature_names(model)[1:]

    @property
    def input_names(self) -> Tuple[str, ...]:
        """Graph inputs: the image encoder's first two outputs, the text
        encoder's, then a SAM 2.1 head's high-resolution maps."""
        return ('img_feats', 'image_embeddings') + TEXT_OUTPUTS + \
            self.high_res

    @property
    def image_input_names(self) -> Tuple[str, ...]:
        """The inputs of one image (no ``num_expressions`` axis)."""
        return ('img_feats', 'image_embeddings') + self.high_res

    @property
    def output_names(self) -> Tuple[str, ...]:
        """Graph outputs: ``presence`` for a head with ``presence_cfg``."""
        names = ('logits', 'global_map')
        return names + ('presence', ) if self.presence else names

    def forward(self,
                img_feats: Tensor,
                image_embeddings: Tensor,
                text_global: Tensor,
                text_feats: Tensor,
                text_mask: Tensor,
                high_res_feats_s0: Optional[Tensor] = None,
                high_res_feats_s1: Optional[Tensor] = None
                ) -> Tuple[Tensor, ...]:  # yapf: disable
        """Decode N expressions.

        Args:
            img_feats (Tensor): (1, D, h, w) from the image encoder.
            image_embeddings (Tensor): (1, C, s, s) from the image encoder.
            text_global (Tensor): (N, D) from the text encoder.
            text_feats (Tensor): (N, L, D) from the text encoder.
            text_mask (Tensor): (N, L) bool from the text encoder.
            high_res_feats_s0 (Tensor, optional): (1, C/8, 4s, 4s), a
                SAM 2.1 head only.
            high_res_feats_s1 (Tensor, optional): (1, C/4, 2s, 2s), a
                SAM 2.1 head only.

        Returns:
            tuple[Tensor, ...]: Mask logits (N, 1, Hm, Wm), the global
            filter activation (N, h, w) in [0, 1] and, with presence, the
            presence probabilities (N,) (the logits of an expression below
            the presence threshold are ``ABSENT_LOGIT``).
        """
        n = text_global.shape[0]
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
        for name, value in zip(self.high_res,
                               (high_res_feats_s0, high_res_feats_s1)):
            head_inputs[name] = value.expand(n, -1, -1, -1)
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
