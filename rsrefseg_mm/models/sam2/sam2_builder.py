"""Build the image-side parts of SAM 2.1 from the ``sam2`` package.

The architectures mirror ``sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``
(``tiny``, ``small``, ``base_plus``, ``large``); a dict gives custom (e.g.
tiny test) models. What is built is what ``SAM2Base`` uses on a single
image (``SAM2ImagePredictor``): the Hiera trunk and FPN neck
(``image_encoder``, the lowest-resolution level dropped, ``scalp=1``), the
prompt encoder, the mask decoder with its high-resolution projections
(``conv_s0`` / ``conv_s1``) and object-score head, and ``no_mem_embed``.
The memory attention, memory encoder and object-pointer layers of the video
model are not built.

``sam2`` is imported when a model is built, not when ``rsrefseg_mm`` is:
importing it initialises Hydra's global configuration store.
"""
from typing import Dict, Union

import torch
import torch.nn as nn
from torch.nn.init import trunc_normal_

#: Settings of SAM 2.1 Hiera-T (``sam2.1_hiera_t.yaml``); every other
#: arch overrides some of them. ``encoder_*`` configure the Hiera trunk, the
#: neck follows from them (``backbone_channel_list`` = the stage widths,
#: ``fpn_top_down_levels=(2, 3)``, nearest upsampling), the rest are
#: ``SAM2Base._build_sam_heads``'s fixed values (``iou_prediction_use_sigmoid``
#: and ``pred_obj_scores`` with its MLP as in every SAM 2.1 config).
SAM2_DEFAULTS = dict(
    encoder_embed_dim=96,
    encoder_num_heads=1,
    encoder_stages=(1, 2, 7, 2),
    encoder_global_attn_blocks=(5, 7, 9),
    encoder_window_spec=(8, 4, 14, 7),
    encoder_window_pos_embed_size=(7, 7),
    encoder_drop_path_rate=0.0,
    fpn_top_down_levels=(2, 3),
    image_size=1024,
    prompt_embed_dim=256,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_num_heads=8,
    num_multimask_outputs=3,
    iou_head_depth=3,
    iou_head_hidden_dim=256,
)

#: Official SAM 2.1 variants (differences to :data:`SAM2_DEFAULTS`).
SAM2_ARCHS: Dict[str, dict] = {
    'tiny':
    dict(),
    'small':
    dict(encoder_stages=(1, 2, 11, 2), encoder_global_attn_blocks=(7, 10, 13)),
    'base_plus':
    dict(
        encoder_embed_dim=112,
        encoder_num_heads=2,
        encoder_stages=(2, 3, 16, 3),
        encoder_global_attn_blocks=(12, 16, 20),
        encoder_window_pos_embed_size=(14, 14)),
    'large':
    dict(
        encoder_embed_dim=144,
        encoder_num_heads=2,
        encoder_stages=(2, 6, 36, 4),
        encoder_global_attn_blocks=(23, 33, 43),
        encoder_window_spec=(8, 4, 16, 8)),
}
#: The ``sam2`` package's config of each arch (the presets' source).
SAM2_CONFIGS = {
    'tiny': 'configs/sam2.1/sam2.1_hiera_t.yaml',
    'small': 'configs/sam2.1/sam2.1_hiera_s.yaml',
    'base_plus': 'configs/sam2.1/sam2.1_hiera_b+.yaml',
    'large': 'configs/sam2.1/sam2.1_hiera_l.yaml',
}
#: Hiera downsamples 4x in its patch embedding, then 2x at each of its 3
#: later stages; SAM 2 decodes at stride 16 (the last stage is dropped).
SAM2_IMAGE_STRIDE = 32
SAM2_BACKBONE_STRIDE = 16


def sam2_arch_settings(arch: Union[str, dict]) -> dict:
    """Resolve an arch name or dict into the full SAM 2 settings.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base_plus'``,
            ``'large'`` or a dict overriding keys of :data:`SAM2_DEFAULTS`,
            e.g. a tiny model ``dict(encoder_embed_dim=8,
            encoder_stages=(1, 1, 2, 1), encoder_global_attn_blocks=(3, ),
            image_size=128, prompt_embed_dim=32, decoder_mlp_dim=64,
            decoder_num_heads=2, iou_head_hidden_dim=32)``.

    Returns:
        dict: All keys of :data:`SAM2_DEFAULTS`.
    """
    if isinstance(arch, str):
        if arch not in SAM2_ARCHS:
            raise ValueError(f'Unknown SAM 2 arch {arch!r}; choose one of '
                             f'{sorted(SAM2_ARCHS)} or pass a dict')
        return {**SAM2_DEFAULTS, **SAM2_ARCHS[arch]}
    if not isinstance(arch, dict):
        raise TypeError(
            f'SAM 2 arch must be a str or dict, got {type(arch).__name__}')
    unknown = set(arch) - set(SAM2_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown SAM 2 arch keys {sorted(unknown)}; valid '
                         f'keys: {sorted(SAM2_DEFAULTS)}')
    cfg = {**SAM2_DEFAULTS, **arch}
    if cfg['image_size'] % SAM2_IMAGE_STRIDE:
        raise ValueError(f'SAM 2 image_size {cfg["image_size"]} must be a '
                         f'multiple of {SAM2_IMAGE_STRIDE} (Hiera\'s stride)')
    if len(cfg['encoder_stages']) != 4 or len(cfg['encoder_window_spec']) != 4:
        raise ValueError('SAM 2 needs 4 Hiera stages (encoder_stages and '
                         'encoder_window_spec of length 4)')
    if cfg['prompt_embed_dim'] % 8:
        raise ValueError('SAM 2 prompt_embed_dim must be a multiple of 8 '
                         '(conv_s0 projects to prompt_embed_dim / 8)')
    return cfg


def build_sam2_modules(arch: Union[str, dict]) -> nn.Module:
    """Build the parts of SAM 2 that segment an image.

    Args:
        arch (str | dict): See :func:`sam2_arch_settings`.

    Returns:
        nn.Module: A container with ``image_encoder`` (``ImageEncoder``:
        ``Hiera`` trunk + ``FpnNeck``, ``scalp=1``), ``prompt_encoder``
        (``PromptEncoder``), ``mask_decoder`` (``MaskDecoder`` with
        ``use_high_res_features=True``, the object-score MLP,
        ``iou_prediction_use_sigmoid=True``) and ``no_mem_embed`` (1, 1, C),
        randomly initialised as ``SAM2Base`` initialises them. Its state
        dict is an official ``sam2.1_hiera_*.pt`` ``model`` dict without the
        video-only tensors, with ``sam_prompt_encoder.`` / ``sam_mask_
        decoder.`` renamed ``prompt_encoder.`` / ``mask_decoder.``.
    """
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    cfg = sam2_arch_settings(arch)
    dim = cfg['prompt_embed_dim']
    trunk = Hiera(
        embed_dim=cfg['encoder_embed_dim'],
        num_heads=cfg['encoder_num_heads'],
        drop_path_rate=cfg['encoder_drop_path_rate'],
        stages=tuple(cfg['encoder_stages']),
        global_att_blocks=tuple(cfg['encoder_global_attn_blocks']),
        window_pos_embed_bkg_spatial_size=tuple(
            cfg['encoder_window_pos_embed_size']),
        window_spec=tuple(cfg['encoder_window_spec']))
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=dim, normalize=True, scale=None, temperature=10000),
        d_model=dim,
        backbone_channel_list=list(trunk.channel_list),
        fpn_top_down_levels=list(cfg['fpn_top_down_levels']),
        fpn_interp_model='nearest')
    embed_size = cfg['image_size'] // SAM2_BACKBONE_STRIDE
    modules = nn.Module()
    modules.image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
    modules.prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(embed_size, embed_size),
        input_image_size=(cfg['image_size'], cfg['image_size']),
        mask_in_chans=cfg['mask_in_chans'])
    modules.mask_decoder = MaskDecoder(
        num_multimask_outputs=cfg['num_multimask_outputs'],
        transformer=TwoWayTransformer(
            depth=cfg['decoder_depth'],
            embedding_dim=dim,
            mlp_dim=cfg['decoder_mlp_dim'],
            num_heads=cfg['decoder_num_heads']),
        transformer_dim=dim,
        iou_head_depth=cfg['iou_head_depth'],
        iou_head_hidden_dim=cfg['iou_head_hidden_dim'],
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True)
    modules.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))
    trunc_normal_(modules.no_mem_embed, std=0.02)
    return modules
