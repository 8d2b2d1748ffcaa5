"""Reading SAM weight files in the two layouts users hold.

Both are returned in segment-anything's ``Sam`` key layout
(``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), the layout
:func:`~rsrefseg_mm.models.sam.sam_builder.build_sam_modules` builds:

* segment-anything's releases (``sam_vit_b_01ec64.pth``,
  ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``): plain state dicts,
  read by :func:`~rsrefseg_mm.utils.checkpoint.safe_torch_load`
  (``weights_only=True`` and the runner allow-list).
* the Hugging Face folders ``facebook/sam-vit-{base,large,huge}``
  (transformers' ``SamModel``): ``model.safetensors`` (or the shards of
  ``model.safetensors.index.json``) and ``config.json``, or such a
  ``.safetensors`` file alone. Only safetensors are read from a folder (no
  pickle, no code, transformers is not imported); the keys are renamed by
  :func:`convert_hf_sam_state_dict`.

transformers' SAM mask decoder normalises its two-way transformer with
LayerNorm eps ``mask_decoder_config.layer_norm_eps`` (1e-6), where
segment-anything uses PyTorch's default 1e-5; :func:`read_sam_checkpoint`
reports the eps a Hugging Face file was trained with.
"""
import json
import logging
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from mmengine.logging import print_log

from ...utils.checkpoint import safe_torch_load

#: LayerNorm eps of segment-anything's two-way transformer (PyTorch's).
SAM_DECODER_NORM_EPS = 1e-5
#: transformers' ``SamMaskDecoderConfig.layer_norm_eps`` default.
HF_SAM_DECODER_NORM_EPS = 1e-6
#: Hugging Face repositories of the official SAM weights.
HF_SAM_REPOS = {
    'vit_b': 'facebook/sam-vit-base',
    'vit_l': 'facebook/sam-vit-large',
    'vit_h': 'facebook/sam-vit-huge',
}
_HF_WEIGHTS = ('model.safetensors', 'model.safetensors.index.json')
#: Shared random positional encoding (``SamModel`` registers it twice).
_HF_SHARED_PE = 'shared_image_embedding.positional_embedding'
_HF_PROMPT_PE = 'prompt_encoder.shared_embedding.positional_embedding'

# (transformers module path, segment-anything module path); the rest of the
# key (``weight``, ``bias``, or a LoRA wrapper's ``original_layer.weight``)
# is kept. The first rule that matches the start of a key is applied.
_RULES = [(re.compile('^' + src), dst) for src, dst in (
    (r'vision_encoder\.patch_embed\.projection\.',
     'image_encoder.patch_embed.proj.'),
    (r'vision_encoder\.pos_embed$', 'image_encoder.pos_embed'),
    (r'vision_encoder\.layers\.(\d+)\.layer_norm([12])\.',
     r'image_encoder.blocks.\1.norm\2.'),
    (r'vision_encoder\.layers\.(\d+)\.(attn|mlp)\.',
     r'image_encoder.blocks.\1.\2.'),
    (r'vision_encoder\.neck\.conv1\.', 'image_encoder.neck.0.'),
    (r'vision_encoder\.neck\.layer_norm1\.', 'image_encoder.neck.1.'),
    (r'vision_encoder\.neck\.conv2\.', 'image_encoder.neck.2.'),
    (r'vision_encoder\.neck\.layer_norm2\.', 'image_encoder.neck.3.'),
    (re.escape(_HF_SHARED_PE) + '$',
     'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'),
    (r'prompt_encoder\.mask_embed\.conv1\.',
     'prompt_encoder.mask_downscaling.0.'),
    (r'prompt_encoder\.mask_embed\.layer_norm1\.',
     'prompt_encoder.mask_downscaling.1.'),
    (r'prompt_encoder\.mask_embed\.conv2\.',
     'prompt_encoder.mask_downscaling.3.'),
    (r'prompt_encoder\.mask_embed\.layer_norm2\.',
     'prompt_encoder.mask_downscaling.4.'),
    (r'prompt_encoder\.mask_embed\.conv3\.',
     'prompt_encoder.mask_downscaling.6.'),
    (r'prompt_encoder\.point_embed\.(\d+)\.',
     r'prompt_encoder.point_embeddings.\1.'),
    (r'prompt_encoder\.(not_a_point_embed|no_mask_embed)\.',
     r'prompt_encoder.\1.'),
    (r'mask_decoder\.(iou_token|mask_tokens)\.', r'mask_decoder.\1.'),
    (r'mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.',
     r'mask_decoder.transformer.layers.\1.norm\2.'),
    (r'mask_decoder\.transformer\.layer_norm_final_attn\.',
     'mask_decoder.transformer.norm_final_attn.'),
    (r'mask_decoder\.transformer\.(layers\.\d+\.(self_attn|cross_attn_'
     r'token_to_image|cross_attn_image_to_token|mlp)|final_attn_token_to_'
     r'image)\.', r'mask_decoder.transformer.\1.'),
    (r'mask_decoder\.upscale_conv1\.', 'mask_decoder.output_upscaling.0.'),
    (r'mask_decoder\.upscale_layer_norm\.',
     'mask_decoder.output_upscaling.1.'),
    (r'mask_decoder\.upscale_conv2\.', 'mask_decoder.output_upscaling.3.'),
)]
# transformers' SamFeedForward (proj_in, layers.i, proj_out) ->
# segment-anything's MLP (layers.0, layers.i+1, layers.depth-1)
_FFN = re.compile(r'^mask_decoder\.(output_hypernetworks_mlps\.\d+|'
                  r'iou_prediction_head)\.(proj_in|proj_out|layers\.(\d+))\.')


def is_hf_sam_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has transformers' ``SamModel`` keys."""
    return any(k.startswith('vision_encoder.') for k in state_dict)


def hf_sam_key_map(keys: Iterable[str]) -> Dict[str, Optional[str]]:
    """Map transformers ``SamModel`` keys to segment-anything ``Sam`` keys.

    Vision encoder: ``patch_embed.projection`` -> ``patch_embed.proj``,
    ``layers.N.layer_norm1/2`` -> ``blocks.N.norm1/2`` (fused ``attn.qkv``,
    ``attn.proj``, ``attn.rel_pos_h/w`` and ``mlp.lin1/2`` keep their
    names), ``neck.conv1/layer_norm1/conv2/layer_norm2`` ->
    ``neck.0/1/2/3``. Prompt encoder: ``shared_image_embedding.
    positional_embedding`` (and its copy ``prompt_encoder.shared_embedding.
    positional_embedding``) -> ``pe_layer.positional_encoding_gaussian_
    matrix``, ``mask_embed.conv1/layer_norm1/conv2/layer_norm2/conv3`` ->
    ``mask_downscaling.0/1/3/4/6``, ``point_embed.N`` ->
    ``point_embeddings.N``. Mask decoder: ``layer_norm1..4`` ->
    ``norm1..4``, ``layer_norm_final_attn`` -> ``norm_final_attn``,
    ``upscale_conv1/upscale_layer_norm/upscale_conv2`` ->
    ``output_upscaling.0/1/3``, and the feed-forward heads (hypernetwork
    MLPs, IoU head) ``proj_in/layers.i/proj_out`` -> ``layers.0/i+1/D-1``.
    The rest of a key after the module path is kept, so LoRA-wrapped keys
    (``...qkv.original_layer.weight``) map too.

    Args:
        keys (Iterable[str]): transformers keys.

    Returns:
        dict[str, str | None]: The segment-anything key of each key; None
        for keys of no known ``SamModel`` module.
    """
    keys = list(keys)
    depth: Dict[str, int] = {}
    for k in keys:
        m = _FFN.match(k)
        if m:
            hidden = int(m.group(3)) + 1 if m.group(3) is not None else 0
            depth[m.group(1)] = max(depth.get(m.group(1), 2), hidden + 2)
    mapping: Dict[str, Optional[str]] = {}
    for key in keys:
        k = _HF_SHARED_PE if key == _HF_PROMPT_PE else key
        m = _FFN.match(k)
        if m:
            name, part = m.group(1), m.group(2)
            index = 0 if part == 'proj_in' else depth[name] - 1 \
                if part == 'proj_out' else int(m.group(3)) + 1
            mapping[key] = f'mask_decoder.{name}.layers.{index}.' + \
                k[m.end():]
            continue
        mapping[key] = None
        for rule, dst in _RULES:
            m = rule.match(k)
            if m:
                mapping[key] = m.expand(dst) + k[m.end():]
                break
    return mapping


def convert_hf_sam_state_dict(
    state_dict: Dict[str, torch.Tensor]
) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """transformers ``SamModel`` state dict -> segment-anything keys.

    Keys are mapped by :func:`hf_sam_key_map`; of the two copies of the
    shared positional encoding one is kept.

    Args:
        state_dict (dict[str, Tensor]): transformers keys.

    Returns:
        tuple[OrderedDict, list[str]]: The converted state dict, and the keys
        of no known ``SamModel`` module (left out of it).

    Raises:
        ValueError: The two copies of the shared positional encoding
            differ.
    """
    if _HF_PROMPT_PE in state_dict and _HF_SHARED_PE in state_dict:
        if not torch.equal(state_dict[_HF_PROMPT_PE],
                           state_dict[_HF_SHARED_PE]):
            raise ValueError(f'{_HF_SHARED_PE} and {_HF_PROMPT_PE} differ; '
                             'SamModel uses one tensor for both')
        state_dict = {
            k: v
            for k, v in state_dict.items() if k != _HF_PROMPT_PE
        }
    out, unknown = OrderedDict(), []
    for k, new in hf_sam_key_map(state_dict).items():
        if new is None:
            unknown.append(k)
        else:
            out[new] = state_dict[k]
    return out, unknown


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as e:  # header / format errors
        raise ValueError(f'failed to read the safetensors file {path}: {e}') \
            from e


def resolve_sam_file(path: str) -> str:
    """The weight file of a Hugging Face SAM folder, or ``path`` itself.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a folder without
            ``model.safetensors`` (pickled ``pytorch_model.bin`` weights of
            a folder are not read).
    """
    if not osp.isdir(path):
        if not osp.isfile(path):
            raise FileNotFoundError(f'SAM checkpoint not found: {path!r}')
        return path
    for name in _HF_WEIGHTS:
        if osp.isfile(osp.join(path, name)):
            return osp.join(path, name)
    raise FileNotFoundError(
        f'{path} holds none of {list(_HF_WEIGHTS)}. Download the Hugging '
        f'Face SAM folder ({", ".join(HF_SAM_REPOS.values())}) with its '
        'model.safetensors, or pass segment-anything\'s .pth file; the '
        'pickled pytorch_model.bin of a folder is not read.')


def hf_sam_decoder_norm_eps(weight_file: str) -> Optional[float]:
    """``mask_decoder_config.layer_norm_eps`` of the ``config.json`` beside
    ``weight_file``; None when there is no ``config.json`` or no such key.

    Raises:
        ValueError: ``config.json`` is not valid JSON.
    """
    cfg_file = osp.join(osp.dirname(weight_file), 'config.json')
    if not osp.isfile(cfg_file):
        return None
    try:
        with open(cfg_file) as f:
            cfg = json.load(f)
    except ValueError as e:
        raise ValueError(f'{cfg_file} is not valid JSON: {e}') from e
    eps = cfg.get('mask_decoder_config', {}).get('layer_norm_eps')
    return None if eps is None else float(eps)


def read_sam_checkpoint(
        path: str) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Read a SAM file or Hugging Face folder in segment-anything's layout.

    Args:
        path (str): segment-anything ``.pth``, a Hugging Face SAM folder, or
            a ``.safetensors`` file (either layout).

    Returns:
        tuple[OrderedDict, dict]: The state dict, and ``file`` (the file
        read), ``layout`` (``'segment-anything'`` or ``'transformers'``),
        ``decoder_norm_eps`` (the transformers file's mask-decoder eps: its
        ``config.json`` value, else transformers' default 1e-6; None for
        segment-anything files) and ``unknown_keys`` (transformers keys of
        no ``SamModel`` module, kept unchanged in the state dict).

    Raises:
        FileNotFoundError: See :func:`resolve_sam_file`.
        ValueError: Not a state dict, or an unreadable file.
        UnsafeCheckpointError: A pickle that needs globals outside the safe
            loader's allow-list.
    """
    weight_file = resolve_sam_file(path)
    if weight_file.endswith('.safetensors'):
        state = _read_safetensors(weight_file)
    elif weight_file.endswith('.json'):
        with open(weight_file) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        state = {}
        for shard in shards:
            state.update(
                _read_safetensors(osp.join(osp.dirname(weight_file), shard)))
    else:
        state = safe_torch_load(weight_file, map_location='cpu')
        for key in ('state_dict', 'model'):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f'{weight_file} holds a {type(state).__name__}, '
                         'not a state dict')
    info = dict(
        file=weight_file,
        layout='segment-anything',
        decoder_norm_eps=None,
        unknown_keys=[])
    if not is_hf_sam_state_dict(state):
        return OrderedDict(state), info
    converted, unknown = convert_hf_sam_state_dict(state)
    for k in unknown:
        converted[k] = state[k]
    eps = hf_sam_decoder_norm_eps(weight_file)
    info.update(
        layout='transformers',
        unknown_keys=unknown,
        decoder_norm_eps=HF_SAM_DECODER_NORM_EPS if eps is None else eps)
    return converted, info


def resolve_decoder_norm_eps(eps: Optional[float],
                             file_eps: Optional[float]) -> float:
    """The mask-decoder LayerNorm eps to build with.

    Args:
        eps (float, optional): The configured value; None for automatic.
        file_eps (float, optional): The value the loaded weights were
            trained with (``decoder_norm_eps`` of
            :func:`read_sam_checkpoint`; None for segment-anything files or
            no file).

    Returns:
        float: ``eps`` when set (a warning when it differs from
        ``file_eps``), else ``file_eps``, else segment-anything's 1e-5.
    """
    if eps is None:
        return SAM_DECODER_NORM_EPS if file_eps is None else file_eps
    if file_eps is not None and float(eps) != float(file_eps):
        print_log(
            f'SAM mask decoder: decoder_norm_eps={eps} is configured, the '
            f'loaded weights were trained with LayerNorm eps {file_eps}',
            logger='current',
            level=logging.WARNING)
    return float(eps)
