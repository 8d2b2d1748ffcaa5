"""Build SAM's three parts and load official SAM weights into them.

The architectures mirror ``segment_anything.build_sam`` (``vit_b``,
``vit_l``, ``vit_h``); a dict gives custom (e.g. tiny test/demo) models.
Weights: segment-anything's ``sam_vit_b_01ec64.pth``,
``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth`` (plain state dicts with
the keys ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*``)
or the Hugging Face folders ``facebook/sam-vit-{base,large,huge}``
(:mod:`~rsrefseg_mm.models.sam.sam_checkpoint`).
"""
import logging
import os.path as osp
from functools import partial
from typing import Dict, Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from segment_anything.modeling import (ImageEncoderViT, PromptEncoder,
                                       TwoWayTransformer)

from .sam_checkpoint import HF_SAM_REPOS, read_sam_checkpoint
from .sam_mask_decoder import PairedMaskDecoder

#: Settings shared by every SAM variant (``segment_anything.build_sam``).
SAM_DEFAULTS = dict(
    encoder_embed_dim=768,
    encoder_depth=12,
    encoder_num_heads=12,
    encoder_global_attn_indexes=(2, 5, 8, 11),
    encoder_window_size=14,
    encoder_mlp_ratio=4.0,
    patch_size=16,
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

#: Official variants and the checkpoint file of each.
SAM_ARCHS: Dict[str, dict] = {
    'vit_b':
    dict(
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11)),
    'vit_l':
    dict(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23)),
    'vit_h':
    dict(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31)),
}
SAM_CHECKPOINTS = {
    'vit_b': 'sam_vit_b_01ec64.pth',
    'vit_l': 'sam_vit_l_0b3195.pth',
    'vit_h': 'sam_vit_h_4b8939.pth',
}
SAM_URL = ('https://github.com/facebookresearch/segment-anything'
           '#model-checkpoints')
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def sam_arch_settings(arch: Union[str, dict]) -> dict:
    """Resolve an arch name or dict into the full SAM settings.

    Args:
        arch (str | dict): ``'vit_b'``, ``'vit_l'``, ``'vit_h'`` or a dict
            overriding keys of :data:`SAM_DEFAULTS`, e.g. a tiny model
            ``dict(encoder_embed_dim=64, encoder_depth=2,
            encoder_num_heads=2, encoder_global_attn_indexes=(1, ),
            image_size=256, prompt_embed_dim=64)``.

    Returns:
        dict: All keys of :data:`SAM_DEFAULTS`.
    """
    if isinstance(arch, str):
        if arch not in SAM_ARCHS:
            raise ValueError(f'Unknown SAM arch {arch!r}; choose one of '
                             f'{sorted(SAM_ARCHS)} or pass a dict')
        return {**SAM_DEFAULTS, **SAM_ARCHS[arch]}
    if not isinstance(arch, dict):
        raise TypeError(f'SAM arch must be a str or dict, got {type(arch)}')
    unknown = set(arch) - set(SAM_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown SAM arch keys {sorted(unknown)}; valid '
                         f'keys: {sorted(SAM_DEFAULTS)}')
    cfg = {**SAM_DEFAULTS, **arch}
    if cfg['image_size'] % cfg['patch_size']:
        raise ValueError(f'SAM image_size {cfg["image_size"]} must be a '
                         f'multiple of patch_size {cfg["patch_size"]}')
    return cfg


def build_sam_modules(arch: Union[str, dict]) -> nn.ModuleDict:
    """Build SAM's image encoder, prompt encoder and (paired) mask decoder.

    Args:
        arch (str | dict): See :func:`sam_arch_settings`.

    Returns:
        nn.ModuleDict: ``image_encoder`` (:class:`ImageEncoderViT`),
        ``prompt_encoder`` (:class:`PromptEncoder`) and ``mask_decoder``
        (:class:`PairedMaskDecoder`), randomly initialised like
        ``sam_model_registry[arch](checkpoint=None)``.
    """
    cfg = sam_arch_settings(arch)
    embed_size = cfg['image_size'] // cfg['patch_size']
    image_encoder = ImageEncoderViT(
        depth=cfg['encoder_depth'],
        embed_dim=cfg['encoder_embed_dim'],
        img_size=cfg['image_size'],
        mlp_ratio=cfg['encoder_mlp_ratio'],
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=cfg['encoder_num_heads'],
        patch_size=cfg['patch_size'],
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(cfg['encoder_global_attn_indexes']),
        window_size=cfg['encoder_window_size'],
        out_chans=cfg['prompt_embed_dim'])
    prompt_encoder = PromptEncoder(
        embed_dim=cfg['prompt_embed_dim'],
        image_embedding_size=(embed_size, embed_size),
        input_image_size=(cfg['image_size'], cfg['image_size']),
        mask_in_chans=cfg['mask_in_chans'])
    mask_decoder = PairedMaskDecoder(
        num_multimask_outputs=cfg['num_multimask_outputs'],
        transformer=TwoWayTransformer(
            depth=cfg['decoder_depth'],
            embedding_dim=cfg['prompt_embed_dim'],
            mlp_dim=cfg['decoder_mlp_dim'],
            num_heads=cfg['decoder_num_heads']),
        transformer_dim=cfg['prompt_embed_dim'],
        iou_head_depth=cfg['iou_head_depth'],
        iou_head_hidden_dim=cfg['iou_head_hidden_dim'])
    return nn.ModuleDict(
        dict(
            image_encoder=image_encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=mask_decoder))


def load_sam_checkpoint(modules: nn.Module,
                        checkpoint: str,
                        arch_name: Optional[str] = None,
                        strict: bool = True) -> dict:
    """Load SAM weights into SAM modules, every tensor or an error.

    Reads segment-anything's ``.pth`` files and Hugging Face SAM folders
    (see :mod:`~rsrefseg_mm.models.sam.sam_checkpoint`). Must run before
    LoRA is applied (LoRA renames ``x.weight`` to
    ``x.original_layer.weight``).

    Args:
        modules (nn.Module): A module whose state-dict keys follow SAM's
            layout (``image_encoder.*``, ``prompt_encoder.*``,
            ``mask_decoder.*``), e.g. the output of
            :func:`build_sam_modules`.
        checkpoint (str): ``checkpoints/sam_vit_b_01ec64.pth``, a Hugging
            Face folder such as ``checkpoints/sam-vit-base`` or its
            ``model.safetensors``.
        arch_name (str, optional): Arch name, for messages.
        strict (bool): Raise when the file lacks tensors of the modules or
            holds tensors they do not have. False loads what fits and logs
            a warning listing the missing and unexpected keys. Defaults to
            True.

    Returns:
        dict: ``missing_keys`` and ``unexpected_keys`` (lists), ``layout``
        (``'segment-anything'`` / ``'transformers'``) and
        ``decoder_norm_eps`` (the mask-decoder LayerNorm eps a transformers
        file was trained with; None for segment-anything files).

    Raises:
        FileNotFoundError: The file does not exist (the message says what
            to download and where to put it).
        ValueError: A tensor shape disagrees (wrong arch for the file), no
            SAM tensor at all, or (``strict``) missing / unexpected keys.
        UnsafeCheckpointError: The pickle needs globals outside the safe
            loader's allow-list (see :mod:`rsrefseg_mm.utils.checkpoint`).
    """
    arch = arch_name if isinstance(arch_name, str) else 'custom'
    if not osp.exists(checkpoint):
        fname = SAM_CHECKPOINTS.get(arch, 'sam_vit_b_01ec64.pth')
        repo = HF_SAM_REPOS.get(arch, 'facebook/sam-vit-base')
        raise FileNotFoundError(
            f'SAM checkpoint not found: {checkpoint!r}. Download the '
            f'official SAM weights for arch {arch!r}: {fname} from '
            f'{SAM_URL} (save it as checkpoints/{fname}) or the Hugging Face '
            f'folder {repo} (model.safetensors + config.json, e.g. '
            f'checkpoints/{repo.split("/")[1]}/); set the `sam_checkpoint` '
            f'variable of the config to it, or `checkpoint=None` for a '
            f'random initialisation.')
    state, info = read_sam_checkpoint(checkpoint)
    source = info['file']
    own = modules.state_dict()
    if not set(state) & set(own):
        raise ValueError(
            f'{source} shares no key with SAM\'s layout (image_encoder.*, '
            f'prompt_encoder.*, mask_decoder.*; or transformers\' '
            f'vision_encoder.*, ...); its first keys are {list(state)[:5]}. '
            f'Pass an official SAM checkpoint.')
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape))
                  for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        lines = '\n'.join(f'  {k}: file {a} vs model {b}'
                          for k, a, b in mismatched[:8])
        raise ValueError(
            f'SAM checkpoint {source} does not fit arch {arch!r}: '
            f'{len(mismatched)} tensors differ in shape, e.g.\n{lines}\n'
            f'Use the checkpoint of the configured arch ({SAM_CHECKPOINTS}, '
            f'{HF_SAM_REPOS}) or change `sam_arch`.')
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        msg = (f'SAM checkpoint {source} ({info["layout"]} layout) does not '
               f'match arch {arch!r} exactly: {len(missing)} missing '
               f'tensors (left at their random initialisation), e.g. '
               f'{missing[:5]}; {len(unexpected)} unexpected tensors, e.g. '
               f'{unexpected[:5]}.')
        if strict:
            raise ValueError(
                msg + ' Use the complete checkpoint of the configured arch, '
                'or set `strict_load=False` in SAMPromptHead to load it '
                'partially.')
        print_log(
            msg + ' Loaded partially (strict_load=False).',
            logger='current',
            level=logging.WARNING)
    modules.load_state_dict(state, strict=False)
    print_log(
        f'Loaded SAM checkpoint {source} ({info["layout"]} layout, '
        f'{len(state) - len(unexpected)} tensors)',
        logger='current')
    return dict(
        missing_keys=missing,
        unexpected_keys=unexpected,
        layout=info['layout'],
        decoder_norm_eps=info['decoder_norm_eps'])
