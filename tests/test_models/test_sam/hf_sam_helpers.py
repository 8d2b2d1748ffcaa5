"""transformers SAM references for the SAM tests (test-only dependency)."""
import torch

from rsrefseg_mm.models.sam import (SAM_PIXEL_MEAN, SAM_PIXEL_STD,
                                    sam_arch_settings)


def hf_sam_config(arch):
    """transformers ``SamConfig`` of one of our SAM archs."""
    from transformers import SamConfig
    s = sam_arch_settings(arch)
    return SamConfig(
        vision_config=dict(
            hidden_size=s['encoder_embed_dim'],
            num_hidden_layers=s['encoder_depth'],
            num_attention_heads=s['encoder_num_heads'],
            global_attn_indexes=list(s['encoder_global_attn_indexes']),
            window_size=s['encoder_window_size'],
            image_size=s['image_size'],
            patch_size=s['patch_size'],
            output_channels=s['prompt_embed_dim'],
            mlp_dim=int(s['encoder_embed_dim'] * s['encoder_mlp_ratio']),
            num_pos_feats=s['prompt_embed_dim'] // 2),
        prompt_encoder_config=dict(
            hidden_size=s['prompt_embed_dim'],
            image_size=s['image_size'],
            patch_size=s['patch_size'],
            image_embedding_size=s['image_size'] // s['patch_size'],
            mask_input_channels=s['mask_in_chans']),
        mask_decoder_config=dict(
            hidden_size=s['prompt_embed_dim'],
            mlp_dim=s['decoder_mlp_dim'],
            num_attention_heads=s['decoder_num_heads'],
            num_hidden_layers=s['decoder_depth'],
            num_multimask_outputs=s['num_multimask_outputs'],
            iou_head_depth=s['iou_head_depth'],
            iou_head_hidden_dim=s['iou_head_hidden_dim']))


def random_hf_sam(config, seed=0):
    """A ``SamModel`` whose every tensor is random, so that a swapped or
    skipped tensor changes the outputs: weight matrices / kernels with std
    1 / sqrt(fan in) (activations keep their scale at full size), LayerNorm
    weights 1 + N(0, 0.2), everything else (biases, embeddings, relative
    positions) N(0, 0.2)."""
    from transformers import SamModel
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and 'rel_pos' not in name and \
                    'embed' not in name:
                p.copy_(torch.randn_like(p) / p[0].numel()**0.5)
            elif 'layer_norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def hf_outputs(model, images, sparse, dense_in):
    """transformers' path as the RSRefSeg authors run it: image embeddings,
    dense prompt through ``prompt_encoder(input_masks=...)``, the sparse
    prompts straight into the mask decoder, ``multimask_output=False``."""
    mean = torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        emb = model.get_image_embeddings((images - mean) / std)
        _, dense = model.prompt_encoder(
            input_points=None,
            input_labels=None,
            input_boxes=None,
            input_masks=dense_in)
        pe = model.get_image_wide_positional_embeddings().repeat(
            images.shape[0], 1, 1, 1)
        masks = model.mask_decoder(
            image_embeddings=emb,
            image_positional_embeddings=pe,
            sparse_prompt_embeddings=sparse[:, None],
            dense_prompt_embeddings=dense,
            multimask_output=False)[0]
    return emb, masks[:, 0]  # (B, 1, 4h, 4w): point batch 1, one mask
