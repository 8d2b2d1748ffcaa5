"""Reading SigLIP weight files as users download them.

Two layouts are accepted, both read without executing code:

* the Hugging Face folder of ``google/siglip-*`` (``model.safetensors``, or
  shards listed in ``model.safetensors.index.json``; ``spiece.model`` beside
  them) or that ``.safetensors`` file alone. Keys ``vision_model.*``,
  ``text_model.*``, ``logit_scale``, ``logit_bias`` are
  :class:`SigLIPBackbone`'s own keys. The fixed-resolution SigLIP 2 folders
  (``google/siglip2-*-patch16-512`` and the others whose ``config.json``
  says ``model_type: siglip``) have the same layout, with Gemma's
  ``tokenizer.model`` instead of ``spiece.model``.
* open_clip's ``ViT-SO400M-14-SigLIP-384`` (and other SigLIP) checkpoints
  (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``): a timm
  image trunk under ``visual.trunk.*`` and open_clip's text transformer under
  ``text.*``; converted by :func:`convert_open_clip_siglip`.

``.bin`` / ``.pt`` / ``.pth`` files are read with
:func:`~rsrefseg_mm.utils.checkpoint.safe_torch_load` (``weights_only=True``
and the runner allow-list; ``--unsafe-load`` / ``allow_unsafe_load()`` for
a trusted file it refuses).
"""
import json
import os.path as osp
from collections import OrderedDict
from typing import Dict, Optional, Union

import torch

from ....utils.checkpoint import UnsafeCheckpointError, safe_torch_load

SIGLIP_FILES = {
    'so400m-patch14-384': 'google/siglip-so400m-patch14-384',
    'so400m-patch14-224': 'google/siglip-so400m-patch14-224',
    'base-patch16-224': 'google/siglip-base-patch16-224',
    'base-patch16-256': 'google/siglip-base-patch16-256',
    'base-patch16-384': 'google/siglip-base-patch16-384',
    'base-patch16-512': 'google/siglip-base-patch16-512',
    'large-patch16-256': 'google/siglip-large-patch16-256',
    'large-patch16-384': 'google/siglip-large-patch16-384',
    'siglip2-base-patch16-224': 'google/siglip2-base-patch16-224',
    'siglip2-base-patch16-256': 'google/siglip2-base-patch16-256',
    'siglip2-base-patch16-384': 'google/siglip2-base-patch16-384',
    'siglip2-base-patch16-512': 'google/siglip2-base-patch16-512',
    'siglip2-base-patch32-256': 'google/siglip2-base-patch32-256',
    'siglip2-large-patch16-256': 'google/siglip2-large-patch16-256',
    'siglip2-large-patch16-384': 'google/siglip2-large-patch16-384',
    'siglip2-large-patch16-512': 'google/siglip2-large-patch16-512',
    'siglip2-so400m-patch14-224': 'google/siglip2-so400m-patch14-224',
    'siglip2-so400m-patch14-384': 'google/siglip2-so400m-patch14-384',
    'siglip2-so400m-patch16-256': 'google/siglip2-so400m-patch16-256',
    'siglip2-so400m-patch16-384': 'google/siglip2-so400m-patch16-384',
    'siglip2-so400m-patch16-512': 'google/siglip2-so400m-patch16-512',
}
#: Tokenizer file of a Hugging Face folder, per ``tokenizer_type`` of the
#: arch: SigLIP's T5 SentencePiece, SigLIP 2's Gemma SentencePiece.
TOKENIZER_FILES = {'siglip': 'spiece.model', 'gemma': 'tokenizer.model'}
_HF_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json',
                    'open_clip_model.safetensors',
                    'open_clip_pytorch_model.bin')


def arch_tokenizer_type(arch: Union[str, dict, None]) -> str:
    """``'gemma'`` for a SigLIP 2 arch (``'siglip2-*'`` names, or a dict
    with ``tokenizer_type='gemma'``), else ``'siglip'``."""
    if isinstance(arch, dict):
        return arch.get('tokenizer_type', 'siglip')
    return 'gemma' if str(arch or '').startswith('siglip2') else 'siglip'


def _missing_message(path: str, arch: str) -> str:
    repo = SIGLIP_FILES.get(arch, 'google/siglip-<arch>')
    tokenizer = TOKENIZER_FILES[arch_tokenizer_type(arch)]
    return (f'SigLIP checkpoint {path!r} not found. Download the Hugging '
            f'Face folder {repo} (model.safetensors, {tokenizer}, '
            f'config.json) into checkpoints/{repo.split("/")[-1]}/ and set '
            "the backbone's `checkpoint` to that folder (or to its "
            'model.safetensors), or pass open_clip\'s SigLIP checkpoint file; '
            'checkpoint=None keeps a random initialisation.')


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except Exception as e:  # header/format errors
        raise ValueError(f'failed to read the safetensors file {path}: {e}') \
            from e


def resolve_siglip_file(path: str, arch: str = '') -> str:
    """The weight file of a folder (or ``path`` itself when a file).

    Raises:
        FileNotFoundError: Nothing usable at ``path`` (says what to get).
    """
    if osp.isdir(path):
        for name in _HF_WEIGHT_FILES:
            if osp.isfile(osp.join(path, name)):
                return osp.join(path, name)
        raise FileNotFoundError(
            f'{path} holds none of {list(_HF_WEIGHT_FILES)}. ' +
            _missing_message(path, arch))
    if not osp.isfile(path):
        raise FileNotFoundError(_missing_message(path, arch))
    return path


def load_siglip_file(path: str, arch: str = '') -> Dict[str, torch.Tensor]:
    """Load a SigLIP weight file or folder as a raw state dict.

    Args:
        path (str): HF folder, ``.safetensors`` file, sharded index
            ``.json`` or a ``torch.save`` state dict.
        arch (str): Arch name, for the error message.

    Returns:
        dict[str, Tensor]: Keys as stored.
    """
    path = resolve_siglip_file(path, arch)
    if path.endswith('.safetensors'):
        return _read_safetensors(path)
    if path.endswith('.json'):
        with open(path) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        state = {}
        for shard in shards:
            state.update(_read_safetensors(osp.join(osp.dirname(path), shard)))
        return state
    try:
        obj = safe_torch_load(path, map_location='cpu')
    except UnsafeCheckpointError:
        raise  # names the file, the refused globals and the opt-in
    except Exception as e:
        raise ValueError(
            f'failed to read SigLIP checkpoint {path} as a tensors-only '
            f'torch file ({type(e).__name__}: {e}); convert it to '
            '.safetensors or pass the Hugging Face folder') from e
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict):
        raise TypeError(f'SigLIP checkpoint {path} holds a '
                        f'{type(obj).__name__}, expected a state dict')
    return obj


def _split_qkv(out: dict, prefix: str, weight: torch.Tensor,
               bias: torch.Tensor) -> None:
    for name, w, b in zip(('q_proj', 'k_proj', 'v_proj'), weight.chunk(3),
                          bias.chunk(3)):
        out[f'{prefix}.{name}.weight'] = w
        out[f'{prefix}.{name}.bias'] = b


def convert_open_clip_siglip(
        state_dict: Dict[str,
                         torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """open_clip SigLIP keys -> transformers / :class:`SigLIPBackbone` keys.

    Image: timm ``visual.trunk.{patch_embed.proj, pos_embed, blocks.N.{norm1,
    attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, attn_pool.{latent,
    q, kv, proj, norm, mlp}}``. Text: ``text.{token_embedding,
    positional_embedding, transformer.resblocks.N.{ln_1, attn.in_proj_*,
    attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final,
    text_projection}``. A ``module.`` prefix is dropped.

    Args:
        state_dict (dict): open_clip state dict.

    Returns:
        OrderedDict[str, Tensor]: transformers-layout state dict. Keys that
        have no counterpart are kept unchanged (reported by the loader).
    """
    out = OrderedDict()
    sd = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items()
    }
    vis, txt = 'vision_model', 'text_model'
    for k, v in sd.items():
        if k.startswith('visual.trunk.'):
            k = k[len('visual.trunk.'):]
            if k.startswith('blocks.'):
                _, n, rest = k.split('.', 2)
                p = f'{vis}.encoder.layers.{n}'
                if rest.startswith('attn.qkv.'):
                    if rest.endswith('weight'):
                        _split_qkv(
                            out, f'{p}.self_attn', v,
                            sd[f'visual.trunk.blocks.{n}.attn.qkv.bias'])
                    continue
                rest = rest.replace('norm1', 'layer_norm1').replace(
                    'norm2', 'layer_norm2').replace('attn.proj',
                                                    'self_attn.out_proj')
                out[f'{p}.{rest}'] = v
            elif k.startswith('patch_embed.proj.'):
                out[f'{vis}.embeddings.patch_embedding.' +
                    k.rsplit('.', 1)[1]] = v
            elif k == 'pos_embed':
                out[f'{vis}.embeddings.position_embedding.weight'] = v[0]
            elif k.startswith('norm.'):
                out[f'{vis}.post_layernorm.' + k.rsplit('.', 1)[1]] = v
            elif k.startswith('attn_pool.'):
                rest = k[len('attn_pool.'):]
                h = f'{vis}.head'
                if rest == 'latent':
                    out[f'{h}.probe'] = v
                elif rest.startswith(('q.', 'kv.')):
                    kind = rest.rsplit('.', 1)[1]  # weight / bias
                    if rest.startswith('q.'):
                        out[f'{h}.attention.in_proj_{kind}'] = torch.cat(
                            [v, sd[f'visual.trunk.attn_pool.kv.{kind}']])
                elif rest.startswith('proj.'):
                    out[f'{h}.attention.out_proj.' + rest[5:]] = v
                elif rest.startswith('norm.'):
                    out[f'{h}.layernorm.' + rest[5:]] = v
                else:  # mlp.fc1 / mlp.fc2
                    out[f'{h}.{rest}'] = v
            else:
                out['visual.trunk.' + k] = v
        elif k.startswith('text.'):
            k = k[len('text.'):]
            if k.startswith('transformer.resblocks.'):
                _, _, n, rest = k.split('.', 3)
                p = f'{txt}.encoder.layers.{n}'
                if rest.startswith('attn.in_proj_'):
                    kind = rest.rsplit('_', 1)[1]
                    if kind == 'weight':
                        _split_qkv(
                            out, f'{p}.self_attn', v,
                            sd['text.transformer.resblocks.'
                               f'{n}.attn.in_proj_bias'])
                    continue
                rest = rest.replace('ln_1', 'layer_norm1').replace(
                    'ln_2',
                    'layer_norm2').replace('attn.out_proj',
                                           'self_attn.out_proj').replace(
                                               'mlp.c_fc', 'mlp.fc1').replace(
                                                   'mlp.c_proj', 'mlp.fc2')
                out[f'{p}.{rest}'] = v
            elif k == 'token_embedding.weight':
                out[f'{txt}.embeddings.token_embedding.weight'] = v
            elif k == 'positional_embedding':
                out[f'{txt}.embeddings.position_embedding.weight'] = v
            elif k.startswith('ln_final.'):
                out[f'{txt}.final_layer_norm.' + k.rsplit('.', 1)[1]] = v
            elif k.startswith('text_projection.'):
                out[f'{txt}.head.' + k.rsplit('.', 1)[1]] = v
            else:
                out['text.' + k] = v
        elif k in ('logit_scale', 'logit_bias'):
            out[k] = v.reshape(1)
        else:
            out[k] = v
    return out


def load_siglip_checkpoint(path: str,
                           arch: str = '') -> 'OrderedDict[str, torch.Tensor]':
    """Load a SigLIP folder/file in :class:`SigLIPBackbone`'s key layout.

    Args:
        path (str): See :func:`load_siglip_file`.
        arch (str): Arch name, for error messages.

    Returns:
        OrderedDict[str, Tensor]: ``vision_model.*``, ``text_model.*``,
        ``logit_scale``, ``logit_bias`` (dtype as stored).
    """
    state = load_siglip_file(path, arch)
    if any(
            k.startswith(('visual.trunk.', 'module.visual.trunk.'))
            for k in state):
        return convert_open_clip_siglip(state)
    out = OrderedDict()
    for k, v in state.items():
        k = k[len('module.'):] if k.startswith('module.') else k
        out[k] = v
    return out


__all__ = [
    'SIGLIP_FILES', 'TOKENIZER_FILES', 'arch_tokenizer_type',
    'resolve_siglip_file', 'load_siglip_file', 'convert_open_clip_siglip',
    'load_siglip_checkpoint', 'siglip_tokenizer_path'
]


def siglip_tokenizer_path(checkpoint: Optional[str],
                          tokenizer_type: str = 'siglip') -> Optional[str]:
    """The tokenizer file beside a SigLIP checkpoint (folder or file).

    Args:
        checkpoint (str, optional): Folder or weight file.
        tokenizer_type (str): ``'siglip'`` (``spiece.model``) or ``'gemma'``
            (SigLIP 2's ``tokenizer.model``); see :data:`TOKENIZER_FILES`.
    """
    if not checkpoint:
        return None
    folder = checkpoint if osp.isdir(checkpoint) or not osp.splitext(
        checkpoint)[1] else osp.dirname(checkpoint)
    return osp.join(folder, TOKENIZER_FILES[tokenizer_type])
