"""Per-tower tuning modes: frozen, LoRA or full fine-tuning.

LoRA layers are mmpretrain's :class:`~mmpretrain.models.peft.LoRALinear`.
Unlike ``mmpretrain.LoRAModel``, the wrapped module keeps its full state dict
(base weights included), so a checkpoint saved by the runner restores the whole
model, also when the towers were random-initialised (tiny/demo configs).
"""
import re
from typing import Optional, Sequence

import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.peft.lora import LoRALinear  # noqa: F401

from .lora_linear import MergedInferenceLoRALinear

TUNING_MODES = ('frozen', 'lora', 'full')


def apply_lora(module: nn.Module,
               targets: Sequence[str],
               rank: int = 16,
               alpha: float = 16,
               drop_rate: float = 0.1) -> int:
    """Replace every ``nn.Linear`` whose name matches a target by LoRALinear.

    Args:
        module (nn.Module): The module to modify in place.
        targets (Sequence[str]): Name suffixes (``'qkv'``) or regular
            expressions (``'.*attn\\.qkv'``) matched with ``re.fullmatch``
            against the full dotted module name.
        rank (int): LoRA rank r.
        alpha (float): LoRA scale alpha (update scaled by alpha / r).
        drop_rate (float): Dropout on the LoRA branch input.

    Returns:
        int: Number of replaced layers. Raises ValueError when 0.
    """
    if rank <= 0:
        raise ValueError(f'LoRA rank must be positive, got {rank}')
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    hits = [
        n for n in names if any(
            n == t or n.endswith('.' + t) or re.fullmatch(t, n)
            for t in targets)
    ]
    if not hits:
        raise ValueError(f'LoRA targets {list(targets)} match no nn.Linear in '
                         f'{type(module).__name__}; linear layers are e.g. '
                         f'{names[:6]}')
    for name in hits:
        parent_name, _, child = name.rpartition('.')
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(
            parent, child,
            MergedInferenceLoRALinear(
                getattr(parent, child), alpha, rank, drop_rate))
    return len(hits)


def apply_tuning(module: nn.Module,
                 mode: str = 'full',
                 name: str = 'module',
                 targets: Optional[Sequence[str]] = None,
                 rank: int = 16,
                 alpha: float = 16,
                 drop_rate: float = 0.1) -> None:
    """Set how a tower is tuned.

    Args:
        module (nn.Module): The tower (e.g. CLIP's image tower, SAM's image
            encoder). Pretrained weights must already be loaded.
        mode (str): ``'frozen'`` (no gradients), ``'lora'`` (base weights
            frozen, LoRA layers on ``targets`` trainable) or ``'full'``.
        name (str): Tower name used in the log line.
        targets, rank, alpha, drop_rate: LoRA settings, see
            :func:`apply_lora`; used only when ``mode='lora'``.
    """
    if mode not in TUNING_MODES:
        raise ValueError(f'tuning mode of {name} must be one of '
                         f'{TUNING_MODES}, got {mode!r}')
    if mode == 'full':
        module.requires_grad_(True)
        return
    module.requires_grad_(False)
    if mode == 'lora':
        if not targets:
            raise ValueError(f'LoRA tuning of {name} needs `targets`')
        n = apply_lora(module, targets, rank, alpha, drop_rate)
        for pname, p in module.named_parameters():
            p.requires_grad_('lora_' in pname)
        print_log(f'{name}: LoRA (r={rank}, alpha={alpha}) on {n} layers',
                  logger='current')


def is_trainable(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` requires a gradient."""
    return any(p.requires_grad for p in module.parameters())
