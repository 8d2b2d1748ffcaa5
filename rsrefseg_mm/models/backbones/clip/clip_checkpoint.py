"""Reading OpenAI / open_clip CLIP weight files.

OpenAI's released files (``ViT-B-16.pt``, ``ViT-L-14.pt``,
``ViT-L-14-336px.pt``) are TorchScript archives, read with
``torch.jit.load(f, map_location='cpu').state_dict()``; open_clip and
converted files are plain state dicts (``torch.save``), read by
:func:`~rsrefseg_mm.utils.checkpoint.safe_torch_load` (``weights_only=True``;
a file that needs other globals is refused unless the user opts in with
``--unsafe-load`` / ``allow_unsafe_load()``). Both are zip files: an
archive is recognised by its ``code/`` folder / ``constants.pkl``.
"""
import os.path as osp
import zipfile
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from ....utils.checkpoint import UnsafeCheckpointError, safe_torch_load
from ....utils.checkpoint_limits import check_checkpoint_size

OPENAI_CLIP_URLS = {
    'ViT-B-16.pt':
    'https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e1'
    '01eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt',
    'ViT-L-14.pt':
    'https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e895'
    '1adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt',
    'ViT-L-14-336px.pt':
    'https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f002'
    '13499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt',
}

_OPENAI_META_KEYS = ('input_resolution', 'context_length', 'vocab_size')
_TEXT_PREFIXES = ('token_embedding', 'positional_embedding', 'transformer.',
                  'ln_final', 'text_projection')


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (not a torch.save file)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any('/code/' in n or n.endswith('constants.pkl') for n in names)


def _missing_file_message(path: str) -> str:
    urls = '\n'.join(f'  {k}: {v}' for k, v in OPENAI_CLIP_URLS.items())
    return (f'CLIP checkpoint {path!r} not found. Download the OpenAI CLIP '
            f'weights matching the arch (ViT-B/16 -> ViT-B-16.pt, ViT-L/14 -> '
            f'ViT-L-14.pt, ViT-L/14@336 -> ViT-L-14-336px.pt), put them in '
            f'checkpoints/ (e.g. checkpoints/ViT-B-16.pt) and set the '
            f"backbone's `checkpoint` to that path (or checkpoint=None for "
            f'random init):\n{urls}')


def load_clip_file(path: str) -> Dict[str, torch.Tensor]:
    """Load a CLIP weight file as a raw state dict (keys untouched).

    Args:
        path (str): TorchScript archive or ``torch.save`` file.

    Returns:
        dict[str, Tensor]: The state dict as stored (OpenAI archives are
        fp16).

    Raises:
        FileNotFoundError: ``path`` does not exist (says what to get).
        CheckpointLimitError: The file claims more memory than its size
            allows.
        UnsafeCheckpointError: The pickle needs globals outside the safe
            loader's allow-list (and the user did not opt in).
        RuntimeError: The file cannot be read.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(_missing_file_message(path))
    if is_torchscript_archive(path):
        # records unpacking to more than max_checkpoint_expansion times the
        # file are refused before TorchScript reads them
        check_checkpoint_size(path, scan_pickle=False)
        try:
            return torch.jit.load(path, map_location='cpu').state_dict()
        except Exception as e:  # corrupted or foreign archive
            raise RuntimeError(f'failed to read the TorchScript archive '
                               f'{path}: {e}') from e
    try:
        obj = safe_torch_load(path, map_location='cpu')
    except UnsafeCheckpointError:
        raise  # names the file, the refused globals and the opt-in
    except Exception as e:
        raise RuntimeError(f'failed to read CLIP checkpoint {path}: {e}') \
            from e
    if not isinstance(obj, dict):
        raise TypeError(f'CLIP checkpoint {path} holds a '
                        f'{type(obj).__name__}, expected a state dict or a '
                        'TorchScript archive')
    return obj


def convert_clip_state_dict(
    state_dict: Dict[str, torch.Tensor]
) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Convert an OpenAI / open_clip CLIP state dict to CLIPBackbone keys.

    Accepted layouts: OpenAI (text keys at the top level), open_clip's
    ``CustomTextCLIP`` (text under ``text.``), dicts wrapped in
    ``state_dict`` with an optional ``module.`` prefix, and already converted
    dicts (idempotent). Renames ``attn.in_proj_weight/bias`` ->
    ``attn.qkv.weight/bias`` and ``attn.out_proj.*`` -> ``attn.proj.*`` and
    moves the top-level text keys under ``text.``. OpenAI's metadata entries
    ``input_resolution``, ``context_length`` and ``vocab_size`` are dropped,
    and so is a stored causal ``attn_mask`` (TorchScript archives of
    open_clip models save it; CLIPBackbone builds the mask itself).

    Args:
        state_dict (dict): The loaded dict.

    Returns:
        tuple[OrderedDict, list[str]]: The converted state dict and the
        dropped metadata keys.
    """
    if isinstance(state_dict.get('state_dict'), dict):
        state_dict = state_dict['state_dict']
    dropped = []
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith('module.'):
            k = k[len('module.'):]
        if k in _OPENAI_META_KEYS or k.split('.')[-1] == 'attn_mask':
            dropped.append(k)
            continue
        if k.startswith(_TEXT_PREFIXES):
            k = 'text.' + k
        k = k.replace('attn.in_proj_weight', 'attn.qkv.weight')
        k = k.replace('attn.in_proj_bias', 'attn.qkv.bias')
        k = k.replace('attn.out_proj.', 'attn.proj.')
        out[k] = v
    return out, dropped


def load_clip_checkpoint(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """Load a CLIP file and convert it to CLIPBackbone keys.

    Args:
        path (str): TorchScript archive or plain state dict.

    Returns:
        OrderedDict[str, Tensor]: State dict in CLIPBackbone's layout
        (dtype as stored).
    """
    state_dict, _ = convert_clip_state_dict(load_clip_file(path))
    return state_dict


def infer_clip_arch(state_dict: Dict[str, torch.Tensor]) -> str:
    """Describe the architecture stored in a converted CLIP state dict.

    Returns:
        str: e.g. ``'ViT-B/16'`` or ``'width 1024, patch 14, image 336'``.
    """
    conv = state_dict.get('visual.conv1.weight')
    pos = state_dict.get('visual.positional_embedding')
    if conv is None or pos is None:
        return 'unknown (no visual.conv1.weight / visual.positional_embedding)'
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((pos.shape[0] - 1)**0.5)
    known = {
        (768, 16, 224): 'ViT-B/16',
        (1024, 14, 224): 'ViT-L/14',
        (1024, 14, 336): 'ViT-L/14@336'
    }
    key = (width, patch, grid * patch)
    return known.get(key, f'width {width}, patch {patch}, '
                     f'image {grid * patch}')
