"""Reading the official SAM 2.1 weight files into the image-side modules.

The releases ``sam2.1_hiera_{tiny,small,base_plus,large}.pt`` (and the
Hugging Face folders ``facebook/sam2.1-hiera-*``, which hold the same file
next to its yaml) are ``torch.save({'model': state_dict})`` of a whole
``SAM2Base``: ``image_encoder.*``, ``sam_prompt_encoder.*``,
``sam_mask_decoder.*`` and ``no_mem_embed``, which an image needs, plus the
video model's memory attention, memory encoder and object-pointer tensors
(:data:`SAM2_VIDEO_KEYS`), which it does not. They are read by
:func:`~rsrefseg_mm.utils.checkpoint.safe_torch_load` (``weights_only=True``,
the size limits and the runner allow-list).
"""
import glob
import logging
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ...utils.checkpoint import safe_torch_load

#: The official file of each arch.
SAM2_CHECKPOINTS = {
    'tiny': 'sam2.1_hiera_tiny.pt',
    'small': 'sam2.1_hiera_small.pt',
    'base_plus': 'sam2.1_hiera_base_plus.pt',
    'large': 'sam2.1_hiera_large.pt',
}
#: Hugging Face repositories holding those files.
HF_SAM2_REPOS = {
    'tiny': 'facebook/sam2.1-hiera-tiny',
    'small': 'facebook/sam2.1-hiera-small',
    'base_plus': 'facebook/sam2.1-hiera-base-plus',
    'large': 'facebook/sam2.1-hiera-large',
}
SAM2_URL = 'https://github.com/facebookresearch/sam2#download-checkpoints'
#: Tensors of ``SAM2Base`` that only video tracking uses, skipped when
#: loading: module prefixes (ending in ``.``) and whole parameter names.
SAM2_VIDEO_KEYS = ('memory_attention.', 'memory_encoder.', 'obj_ptr_proj.',
                   'obj_ptr_tpos_proj.', 'mask_downsample.',
                   'maskmem_tpos_enc', 'no_mem_pos_enc', 'no_obj_ptr',
                   'no_obj_embed_spatial')
#: ``SAM2Base`` module names -> the head's (those of ``SAMPromptHead``).
SAM2_RENAMES = (('sam_prompt_encoder.', 'prompt_encoder.'),
                ('sam_mask_decoder.', 'mask_decoder.'))


def is_sam2_video_key(key: str) -> bool:
    """Whether ``key`` is one of :data:`SAM2_VIDEO_KEYS`."""
    return any(
        key.startswith(k) if k.endswith('.') else key == k
        for k in SAM2_VIDEO_KEYS)


def missing_sam2_message(path: str, arch: str) -> str:
    """What to download for ``arch`` and where to put it."""
    fname = SAM2_CHECKPOINTS.get(arch, SAM2_CHECKPOINTS['large'])
    repo = HF_SAM2_REPOS.get(arch, HF_SAM2_REPOS['large'])
    return (f'SAM 2 checkpoint not found: {path!r}. Download the official '
            f'SAM 2.1 weights for arch {arch!r}: {fname} from {SAM2_URL} '
            f'(save it as checkpoints/{fname}) or the Hugging Face folder '
            f'{repo} ({fname} + its yaml, e.g. checkpoints/'
            f'{repo.split("/")[1]}/); set the head\'s `checkpoint` to it, or '
            '`checkpoint=None` for a random initialisation.')


def resolve_sam2_file(path: str, arch: str = 'custom') -> str:
    """The ``.pt`` file of ``path`` (a file, or a Hugging Face folder).

    A folder must hold the arch's official file
    (:data:`SAM2_CHECKPOINTS`) or exactly one ``.pt`` file.

    Raises:
        FileNotFoundError: Nothing at ``path``, or a folder without a
            single ``.pt`` file (the message says what to download).
    """
    if not osp.exists(path):
        raise FileNotFoundError(missing_sam2_message(path, arch))
    if not osp.isdir(path):
        return path
    expected = osp.join(path, SAM2_CHECKPOINTS.get(arch, ''))
    if arch in SAM2_CHECKPOINTS and osp.isfile(expected):
        return expected
    found = sorted(glob.glob(osp.join(path, '*.pt')))
    if len(found) == 1:
        return found[0]
    names = [osp.basename(f) for f in found]
    raise FileNotFoundError(
        f'{path} holds {len(found)} .pt files {names}, expected one SAM 2.1 '
        'checkpoint. ' + missing_sam2_message(path, arch).split('. ', 1)[1])


def read_sam2_checkpoint(
        path: str,
        arch: str = 'custom') -> Tuple['OrderedDict[str, torch.Tensor]', str]:
    """Read an official SAM 2 file (or folder) as a ``SAM2Base`` state dict.

    Args:
        path (str): ``sam2.1_hiera_*.pt`` or a folder holding it.
        arch (str): Arch name, to pick the file of a folder and for
            messages.

    Returns:
        tuple[OrderedDict, str]: The ``model`` state dict (a file holding a
        plain state dict is read as one) and the file read.

    Raises:
        FileNotFoundError: See :func:`resolve_sam2_file`.
        ValueError: The file holds no state dict.
        UnsafeCheckpointError: A pickle that needs globals outside the safe
            loader's allow-list.
    """
    weight_file = resolve_sam2_file(path, arch)
    state = safe_torch_load(weight_file, map_location='cpu')
    if isinstance(state, dict) and isinstance(state.get('model'), dict):
        state = state['model']
    if not isinstance(state, dict) or not all(
            torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f'{weight_file} holds no SAM 2 state dict (expected '
            f"{{'model': {{name: tensor}}}} as the official files do)")
    return OrderedDict(state), weight_file


def convert_sam2_state_dict(
    state: Dict[str, torch.Tensor]
) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """``SAM2Base`` keys -> the head's keys; video-only tensors dropped.

    Returns:
        tuple[OrderedDict, list[str]]: The renamed state dict and the
        skipped keys (:data:`SAM2_VIDEO_KEYS`).
    """
    out, skipped = OrderedDict(), []
    for key, value in state.items():
        if is_sam2_video_key(key):
            skipped.append(key)
            continue
        for src, dst in SAM2_RENAMES:
            if key.startswith(src):
                key = dst + key[len(src):]
                break
        out[key] = value
    return out, skipped


def load_sam2_checkpoint(modules: nn.Module,
                         checkpoint: str,
                         arch_name: Optional[str] = None,
                         strict: bool = True) -> dict:
    """Load official SAM 2.1 weights, every image tensor or an error.

    Must run before LoRA is applied (LoRA renames ``x.weight`` to
    ``x.original_layer.weight``).

    Args:
        modules (nn.Module): The output of
            :func:`~rsrefseg_mm.models.sam2.build_sam2_modules` (or a module
            with its state-dict layout).
        checkpoint (str): ``checkpoints/sam2.1_hiera_large.pt`` or a folder
            such as ``checkpoints/sam2.1-hiera-large``.
        arch_name (str, optional): Arch name (the file of a folder,
            messages).
        strict (bool): Raise when the file lacks tensors of the modules or
            holds tensors that are neither theirs nor video-only. False
            loads what fits and logs a warning. Defaults to True.

    Returns:
        dict: ``file``, ``missing_keys``, ``unexpected_keys`` and
        ``skipped_keys`` (the video-only tensors left out).

    Raises:
        FileNotFoundError: No such file (the message says what to download
            and where to put it).
        ValueError: A tensor shape disagrees (wrong arch for the file), or
            (``strict``) missing / unexpected keys; the message names the
            file, the arch and the first keys.
        UnsafeCheckpointError: See :func:`read_sam2_checkpoint`.
    """
    arch = arch_name if isinstance(arch_name, str) else 'custom'
    raw, source = read_sam2_checkpoint(checkpoint, arch)
    state, skipped = convert_sam2_state_dict(raw)
    own = modules.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape))
                  for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        lines = '\n'.join(f'  {k}: file {a} vs model {b}'
                          for k, a, b in mismatched[:8])
        raise ValueError(
            f'SAM 2 checkpoint {source} does not fit arch {arch!r}: '
            f'{len(mismatched)} tensors differ in shape, e.g.\n{lines}\n'
            f'Use the checkpoint of the configured arch ({SAM2_CHECKPOINTS})'
            ' or change `sam2_arch`.')
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        msg = (f'SAM 2 checkpoint {source} does not match arch {arch!r} '
               f'exactly: {len(missing)} missing tensors (left at their '
               f'random initialisation), e.g. {missing[:5]}; '
               f'{len(unexpected)} unexpected tensors (neither the image '
               f'model\'s nor video-only), e.g. {unexpected[:5]}.')
        if strict:
            raise ValueError(
                msg + ' Use the complete official SAM 2.1 checkpoint of the '
                'configured arch, or set `strict_load=False` to load it '
                'partially.')
        print_log(
            msg + ' Loaded partially (strict_load=False).',
            logger='current',
            level=logging.WARNING)
    modules.load_state_dict({k: v
                             for k, v in state.items() if k in own},
                            strict=False)
    print_log(
        f'Loaded SAM 2 checkpoint {source} ({len(state) - len(unexpected)} '
        f'tensors; {len(skipped)} video-only tensors skipped)',
        logger='current')
    return dict(
        file=source,
        missing_keys=missing,
        unexpected_keys=unexpected,
        skipped_keys=skipped)
