"""SAM mask decoder that pairs image ``i`` with prompt set ``i``.

segment-anything's ``MaskDecoder.predict_masks`` serves one image with many
prompts: it ``repeat_interleave``s the image embedding once per prompt set.
Given a batch of B images with one referring expression each, that produces
B*B pairings (or a shape error with dense prompts). :class:`PairedMaskDecoder`
overrides ``predict_masks`` so that row ``i`` of the image embeddings is
decoded with row ``i`` of the prompts; everything else (parameters, output
selection in ``forward``) is the stock decoder.

The LayerNorm eps of the two-way transformer can be set
(:meth:`PairedMaskDecoder.set_transformer_norm_eps`): segment-anything uses
PyTorch's 1e-5, transformers' ``SamMaskDecoder`` 1e-6, and weights trained
under one run best under the same.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from segment_anything.modeling import MaskDecoder


class PairedMaskDecoder(MaskDecoder):
    """SAM ``MaskDecoder`` with image/prompt pairing along the batch.

    Same constructor and state-dict layout as
    :class:`segment_anything.modeling.MaskDecoder`.
    """

    @property
    def transformer_norm_eps(self) -> float:
        """LayerNorm eps of the two-way transformer (norm1-4 of every
        layer and ``norm_final_attn``)."""
        eps = {
            m.eps
            for m in self.transformer.modules() if isinstance(m, nn.LayerNorm)
        }
        if len(eps) != 1:
            raise RuntimeError(f'the two-way transformer mixes LayerNorm '
                               f'eps values {sorted(eps)}')
        return eps.pop()

    def set_transformer_norm_eps(self, eps: float) -> None:
        """Set the LayerNorm eps of the two-way transformer.

        Args:
            eps (float): 1e-5 for segment-anything weights, 1e-6 for
                weights trained with transformers' ``SamModel``.
        """
        if not eps > 0:
            raise ValueError(f'LayerNorm eps must be > 0, got {eps}')
        for m in self.transformer.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = float(eps)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict masks, one per (image, prompt set) pair.

        Args:
            image_embeddings (Tensor): Image embeddings (B, C, h, w).
            image_pe (Tensor): Dense positional encoding (1, C, h, w) or
                (B, C, h, w).
            sparse_prompt_embeddings (Tensor): Sparse prompts (B, N, C).
            dense_prompt_embeddings (Tensor): Dense prompts (B, C, h, w)
                (or (1, C, h, w), broadcast).

        Returns:
            tuple[Tensor, Tensor]: Mask logits (B, num_mask_tokens, 4h, 4w)
            and IoU predictions (B, num_mask_tokens).
        """
        B = image_embeddings.shape[0]
        if sparse_prompt_embeddings.shape[0] != B:
            raise ValueError(
                'PairedMaskDecoder pairs image i with prompt set i: got '
                f'{B} image embeddings but '
                f'{sparse_prompt_embeddings.shape[0]} sparse prompt sets')
        if dense_prompt_embeddings.shape[0] not in (1, B):
            raise ValueError(
                f'dense prompts have batch size '
                f'{dense_prompt_embeddings.shape[0]}, expected 1 or {B}')
        output_tokens = torch.cat(
            [self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(B, -1, -1)
        tokens = torch.cat((output_tokens.to(
            sparse_prompt_embeddings.dtype), sparse_prompt_embeddings),
                           dim=1)

        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(B, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:(1 + self.num_mask_tokens), :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled_embedding = self.output_upscaling(src)
        hyper_in_list: List[torch.Tensor] = []
        for i in range(self.num_mask_tokens):
            hyper_in_list.append(self.output_hypernetworks_mlps[i](
                mask_tokens_out[:, i, :]))
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled_embedding.shape
        masks = (hyper_in @ upscaled_embedding.reshape(b, c, h * w)).reshape(
            b, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
