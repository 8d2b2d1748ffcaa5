"""A tiny ``SAM2Base`` built from the ``sam2`` package's modules with the
flags of ``sam2.1_hiera_t.yaml`` (memory attention and memory encoder
included, so its state dict has every kind of key an official file has),
and the matching :class:`SAM2PromptHead` arch."""
import torch

#: Hiera with embed_dim 8 and 5 blocks, 32-channel neck and decoder, 128 px
#: input (8x8 image embedding, 32x32 masks). SAM2Base fixes the decoder's
#: MLP (2048), heads (8) and IoU head (256), so the arch keeps those.
TINY_SAM2 = dict(
    encoder_embed_dim=8,
    encoder_num_heads=1,
    encoder_stages=(1, 1, 2, 1),
    encoder_global_attn_blocks=(3, ),
    image_size=128,
    prompt_embed_dim=32)
#: A smaller decoder for the tests that need no reference model.
TINY_SAM2_FAST = dict(
    TINY_SAM2, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


def tiny_sam2_base(seed: int = 0):
    """``SAM2Base`` with :data:`TINY_SAM2`'s sizes, its zero-initialised
    tensors (Hiera's positional embeddings, LayerNorm biases, ...)
    randomised so that they count, in eval mode."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.memory_attention import (MemoryAttention,
                                                MemoryAttentionLayer)
    from sam2.modeling.memory_encoder import (CXBlock, Fuser, MaskDownSampler,
                                              MemoryEncoder)
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam2_base import SAM2Base
    from sam2.modeling.sam.transformer import RoPEAttention

    torch.manual_seed(seed)
    d, mem = 32, 16
    trunk = Hiera(
        embed_dim=8,
        num_heads=1,
        stages=(1, 1, 2, 1),
        global_att_blocks=(3, ),
        window_pos_embed_bkg_spatial_size=(7, 7))
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=d, normalize=True, scale=None, temperature=10000),
        d_model=d,
        backbone_channel_list=[64, 32, 16, 8],
        fpn_top_down_levels=[2, 3],
        fpn_interp_model='nearest')
    rope = dict(
        rope_theta=10000.0,
        feat_sizes=[8, 8],
        embedding_dim=d,
        num_heads=1,
        downsample_rate=1,
        dropout=0.1)
    memory_attention = MemoryAttention(
        d_model=d,
        pos_enc_at_input=True,
        layer=MemoryAttentionLayer(
            activation='relu',
            dim_feedforward=64,
            dropout=0.1,
            pos_enc_at_attn=False,
            self_attention=RoPEAttention(**rope),
            d_model=d,
            pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False,
            cross_attention=RoPEAttention(
                rope_k_repeat=True, kv_in_dim=mem, **rope)),
        num_layers=1)
    memory_encoder = MemoryEncoder(
        out_dim=mem,
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=mem, normalize=True, scale=None, temperature=10000),
        mask_downsampler=MaskDownSampler(
            embed_dim=d, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(
            layer=CXBlock(
                dim=d,
                kernel_size=7,
                padding=3,
                layer_scale_init_value=1e-6,
                use_dwconv=True),
            num_layers=1),
        in_dim=d)
    model = SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        num_maskmem=7,
        image_size=128,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True)
    randomise_constant_tensors(model)
    return model.eval()


@torch.no_grad()
def randomise_constant_tensors(model: torch.nn.Module) -> None:
    """Give every parameter initialised to a constant (zeros, ones:
    positional embeddings, norms, biases) random values around it, and
    ``no_mem_embed`` a scale that matters next to the features."""
    for name, p in model.named_parameters():
        if p.numel() == 1 or bool((p == p.flatten()[0]).all()):
            p.add_(torch.randn_like(p) * 0.1)
    model.no_mem_embed.normal_(std=0.5)


def official_file(model: torch.nn.Module, path) -> str:
    """Save ``model`` as the official SAM 2 files are saved."""
    torch.save({'model': model.state_dict()}, str(path))
    return str(path)
