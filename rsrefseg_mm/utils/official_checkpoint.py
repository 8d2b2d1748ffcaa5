"""Reading checkpoints of the RSRefSeg authors' code (KyanChen/RSRefSeg and
KyanChen/RSRefSeg2) for the converters in ``tools/model_converters/``.

Both generations train with mmengine (DeepSpeed's FlexibleRunner in their
configs) and wrap towers in PEFT LoRA, so their files share a layout: a
DeepSpeed checkpoint folder ``<ckpt>.pth/mp_rank_00_model_states.pt`` with
the weights under ``module``, or a plain state dict (``state_dict`` /
``model`` / ``module`` / none), keys possibly prefixed with ``module.``;
PEFT's ``<wrapped>.base_model.model.`` wrapper and its LoRA tensors
``base_layer`` / ``lora_A.default`` / ``lora_B.default``, which the
plugin's LoRA layers hold as ``original_layer`` / ``lora_down`` /
``lora_up`` (same shapes, same update ``alpha / r * B A``).
"""
import argparse
import os
import os.path as osp
import re
from typing import Dict, Iterable, Optional

import torch

from .checkpoint import safe_torch_load
from .checkpoint_hash import add_state_dict_hash
from .config import drop_pretrained_checkpoints

#: DeepSpeed's model file inside a checkpoint folder.
DS_MODEL_STATES = 'mp_rank_00_model_states.pt'
#: What PEFT's ``get_peft_model`` puts between the wrapped module's name and
#: its children (``PeftModel.base_model`` -> ``LoraModel.model``).
PEFT_PREFIX = 'base_model.model.'
#: PEFT LoRA names -> rsrefseg-mm's LoRA names.
PEFT_RENAMES = (('.base_layer.', '.original_layer.'),
                ('.lora_A.default.', '.lora_down.'), ('.lora_B.default.',
                                                      '.lora_up.'))
#: A PEFT LoRA tensor of adapter ``default`` (the one the authors train).
PEFT_LORA_DEFAULT = re.compile(r'\.lora_[AB]\.default\.weight$')


def read_official_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The authors' state dict from a file or a DeepSpeed checkpoint folder.

    Read by :func:`~rsrefseg_mm.utils.safe_torch_load` (``.safetensors``
    by safetensors); ``module.`` prefixes are removed.

    Args:
        path (str): A ``.pth`` / ``.pt`` / ``.safetensors`` file or a
            DeepSpeed folder holding :data:`DS_MODEL_STATES`.

    Returns:
        dict[str, Tensor]: Their keys and tensors.

    Raises:
        FileNotFoundError: Nothing to read at ``path``.
        ValueError: No state dict in the file.
    """
    if osp.isdir(path):
        path = osp.join(path, DS_MODEL_STATES)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: pass the authors\' checkpoint file or the '
            f'DeepSpeed checkpoint folder that holds {DS_MODEL_STATES}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = safe_torch_load(path, map_location='cpu')
    for key in ('module', 'state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path} holds no state dict of tensors')
    return {
        k[7:] if k.startswith('module.') else k: v
        for k, v in state.items()
    }


def depeft(key: str) -> str:
    """PEFT LoRA names -> rsrefseg-mm's LoRA names (see the module doc)."""
    for src, dst in PEFT_RENAMES:
        key = key.replace(src, dst)
    return key


def strip_peft_prefix(rest: str) -> str:
    """``rest`` without PEFT's leading ``base_model.model.``."""
    return rest[len(PEFT_PREFIX):] if rest.startswith(PEFT_PREFIX) else rest


def check_peft_adapters(keys: Iterable[str], path: str) -> None:
    """Refuse PEFT tensors other than LoRA adapter ``default``.

    Raises:
        ValueError: E.g. a second adapter, DoRA magnitudes, or LoRA
            embeddings.
    """
    odd = [k for k in keys if 'lora_' in k and not PEFT_LORA_DEFAULT.search(k)]
    if odd:
        raise ValueError(f'{path}: PEFT tensors other than LoRA adapter '
                         f'"default" are not supported, e.g. {odd[:5]}')


def lora_rank(state: Dict[str, torch.Tensor], prefix: str,
              tower: str) -> Optional[int]:
    """The LoRA rank of the converted tensors under ``prefix`` (None when
    the tower has no LoRA).

    Raises:
        ValueError: Ranks differ within the tower.
    """
    found = {
        v.shape[0]
        for k, v in state.items()
        if k.startswith(prefix) and k.endswith('lora_down.weight')
    }
    if len(found) > 1:
        raise ValueError(f'{tower} mixes LoRA ranks {sorted(found)}')
    return found.pop() if found else None


def check_with_config(
        state: Dict[str, torch.Tensor],
        config: str,
        alpha: float,
        hint: str = 'LoRA rank or arch of the config') -> torch.nn.Module:
    """Build ``config``'s model (pretrained files dropped) and load
    ``state`` into it strictly.

    Args:
        state (dict): A converted state dict.
        config (str): An rsrefseg-mm config file.
        alpha (float): The LoRA alpha the authors trained with; every LoRA
            layer of the model must scale by ``alpha / rank``.
        hint (str): What to check in the config when tensors do not fit.

    Returns:
        nn.Module: The model with ``state`` loaded.

    Raises:
        ValueError: Missing / unexpected tensors, other shapes, or another
            LoRA scaling than ``alpha / rank``.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401 (registers the modules)
    cfg = Config.fromfile(config)
    drop_pretrained_checkpoints(cfg.model)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f'{k}: checkpoint {tuple(state[k].shape)} vs model '
        f'{tuple(own[k].shape)}' for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f'{config} does not fit the converted checkpoint: '
            f'{len(missing)} missing, e.g. {missing[:5]}; {len(unexpected)} '
            f'unexpected, e.g. {unexpected[:5]}; {len(shapes)} of another '
            f'shape, e.g. {shapes[:3]} ({hint})')
    for name, m in model.named_modules():
        if hasattr(m, 'lora_down') and hasattr(m, 'scaling'):
            rank = m.lora_down.weight.shape[0]
            if abs(m.scaling - alpha / rank) > 1e-9:
                raise ValueError(
                    f'{config}: LoRA of {name} scales by {m.scaling:g}, the '
                    f'authors\' alpha {alpha:g} / rank {rank} by '
                    f'{alpha / rank:g}; set the config\'s LoRA alpha to '
                    f'{alpha:g} (or pass --lora-alpha)')
    model.load_state_dict(state, strict=True)
    return model


__all__ = [
    'DS_MODEL_STATES', 'PEFT_PREFIX', 'PEFT_RENAMES', 'PEFT_LORA_DEFAULT',
    'read_official_state_dict', 'depeft', 'strip_peft_prefix',
    'check_peft_adapters', 'lora_rank', 'check_with_config'
]


def converter_parser(description: str,
                     config_help: str) -> argparse.ArgumentParser:
    """The converters' command line: ``src``, ``dst``, ``--config``,
    ``--lora-alpha`` and ``--unsafe-load``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        'src',
        help='their checkpoint: a .pth/.pt/.safetensors state dict or a '
        'DeepSpeed checkpoint folder (holding mp_rank_00_model_states.pt)')
    parser.add_argument('dst', help='output .pth')
    parser.add_argument('--config', help=config_help)
    parser.add_argument(
        '--lora-alpha',
        type=float,
        default=16.0,
        help='LoRA alpha the checkpoint was trained with (not stored in '
        'it); 16 in the authors\' configs')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle the source without the safe loader\'s allow-list '
        '(DeepSpeed files may hold other objects); only for files you trust')
    return parser


def save_converted(state: Dict[str, torch.Tensor], src: str, dst: str,
                   **meta) -> None:
    """Write a converted state dict as a runner checkpoint (``meta``:
    ``converted_from`` and the given items; the state dict's hash is
    checked whenever it is loaded)."""
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    checkpoint = dict(
        meta=dict(converted_from=osp.abspath(src), **meta), state_dict=state)
    add_state_dict_hash(checkpoint)
    torch.save(checkpoint, dst)


def write_test_config(dst: str, src: str, config: str, comment: str,
                      model: str) -> str:
    """``<dst stem>.py``: a config inheriting ``config`` with ``model``
    (the text of a ``model = dict(...)`` override) for ``tools/test.py``.

    Returns:
        str: The file written.
    """
    out = osp.splitext(dst)[0] + '.py'
    with open(out, 'w') as f:
        f.write(f'# {osp.basename(dst)}: converted from {src}\n'
                f'_base_ = [{osp.abspath(config)!r}]\n# {comment}\n'
                f'model = {model}\n')
    return out
