"""Per-tower tuning modes: frozen, LoRA or full fine-tuning.

LoRA layers are mmpretrain's :class:`~mmpretrain.models.peft.LoRALinear` for
``nn.Linear`` (merged at inference, :class:`MergedInferenceLoRALinear`) and
:class:`~rsrefseg_mm.models.peft.lora_conv.LoRAConv2d` for ``nn.Conv2d``.
Unlike ``mmpretrain.LoRAModel``, the wrapped module keeps its full state dict
(base weights included), so a checkpoint saved by the runner restores the whole
model, also when the towers were random-initialised (tiny/demo configs).
"""
import re
from typing import Optional, Sequence

import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.peft.lora import LoRALinear  # noqa: F401

from .lora_conv import LoRAConv2d
from .lora_linear import MergedInferenceLoRALinear

TUNING_MODES = ('frozen', 'lora', 'full')


def apply_lora(module: nn.Module,
               targets: Sequence[str],
               rank: int = 16,
               alpha: float = 16,
               drop_rate: float = 0.1) -> int:
    """Wrap every ``nn.Linear`` / ``nn.Conv2d`` whose name matches a target.

    Linears become :class:`MergedInferenceLoRALinear`, convolutions
    :class:`LoRAConv2d`.

    Args:
        module (nn.Module): The module to modify in place.
        targets (Sequence[str]): Full dotted module names (``'neck.0'``),
            regular expressions matched with ``re.fullmatch`` against them
            (``'.*attn\\.qkv'``) or, for linears only, name suffixes at a
            dot boundary (``'qkv'`` matches ``blocks.3.attn.qkv``).
            Convolutions are wrapped only when named in full or by a
            regular expression, so a bare ``'proj'`` never catches SAM's
            ``patch_embed.proj`` convolution.
        rank (int): LoRA rank r.
        alpha (float): LoRA scale alpha (update scaled by alpha / r).
        drop_rate (float): Dropout on the LoRA branch input.

    Returns:
        int: Number of replaced layers. Raises ValueError when 0.
    """
    if rank <= 0:
        raise ValueError(f'LoRA rank must be positive, got {rank}')

    def matches(name: str, layer: nn.Module) -> bool:
        for t in targets:
            if name == t or re.fullmatch(t, name):
                return True
            # name suffixes select linears only: a bare 'proj' must not
            # catch SAM's patch_embed.proj convolution
            if isinstance(layer, nn.Linear) and name.endswith('.' + t):
                return True
        return False

    layers = {
        n: m
        for n, m in module.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }
    names = list(layers)
    hits = [n for n, m in layers.items() if matches(n, m)]
    if not hits:
        raise ValueError(f'LoRA targets {list(targets)} match no nn.Linear / '
                         f'nn.Conv2d in {type(module).__name__}; such layers '
                         f'are e.g. {names[:6]}')
    for name in hits:
        parent_name, _, child = name.rpartition('.')
        parent = module.get_submodule(parent_name) if parent_name else module
        layer = getattr(parent, child)
        wrapper = LoRAConv2d if isinstance(layer, nn.Conv2d) else \
            MergedInferenceLoRALinear
        setattr(parent, child, wrapper(layer, alpha, rank, drop_rate))
    return len(hits)


def apply_tuning(module: nn.Module,
                 mode: str = 'full',
                 name: str = 'module',
                 targets: Optional[Sequence[str]] = None,
                 rank: int = 16,
                 alpha: float = 16,
                 drop_rate: float = 0.1,
                 default_targets: Optional[Sequence[str]] = None,
                 **unknown) -> dict:
    """Set how a tower is tuned; the one parser of the ``*_tuning`` dicts.

    Configs pass ``dict(mode=..., rank=..., alpha=..., drop_rate=...,
    targets=...)`` as keyword arguments.

    Args:
        module (nn.Module): The tower (e.g. CLIP's image tower, SAM's image
            encoder). Pretrained weights must already be loaded.
        mode (str): ``'frozen'`` (no gradients), ``'lora'`` (base weights
            frozen, LoRA layers on ``targets`` trainable) or ``'full'``.
        name (str): Tower name used in messages.
        targets, rank, alpha, drop_rate: LoRA settings, see
            :func:`apply_lora`; used only when ``mode='lora'`` (a config
            that switches an inherited LoRA tower to ``'full'`` keeps the
            inherited LoRA keys, which are then ignored).
        default_targets (Sequence[str], optional): The tower's LoRA targets
            when ``targets`` is not given.
        **unknown: Any other key is an error naming the tower.

    Returns:
        dict: The resolved settings (``mode`` and, for LoRA, ``rank``,
        ``alpha``, ``drop_rate``, ``targets``).
    """
    if unknown:
        raise ValueError(f'{name} tuning: unknown keys {sorted(unknown)}; '
                         "use mode, rank, alpha, drop_rate, targets")
    if mode not in TUNING_MODES:
        raise ValueError(f'tuning mode of {name} must be one of '
                         f'{TUNING_MODES}, got {mode!r}')
    if mode == 'full':
        module.requires_grad_(True)
        return dict(mode=mode)
    module.requires_grad_(False)
    if mode == 'frozen':
        return dict(mode=mode)
    targets = list(targets or default_targets or [])
    if not targets:
        raise ValueError(f'LoRA tuning of {name} needs `targets`')
    n = apply_lora(module, targets, rank, alpha, drop_rate)
    for pname, p in module.named_parameters():
        p.requires_grad_('lora_' in pname)
    print_log(
        f'{name}: LoRA (r={rank}, alpha={alpha}) on {n} layers',
        logger='current')
    return dict(
        mode=mode,
        rank=rank,
        alpha=alpha,
        drop_rate=drop_rate,
        targets=targets)


def is_trainable(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` requires a gradient."""
    return any(p.requires_grad for p in module.parameters())
