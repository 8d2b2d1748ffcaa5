"""``torch.compile`` of a model's hot paths (the towers), not its step.

mmengine's ``compile`` config key makes its ``Runner`` wrap the whole
``model.train_step`` in ``torch.compile`` (training only). For RSRefSeg
that graph would break at the tokenizer (Python strings), at
``loss.backward()`` and in the optimizer step, and test/val would stay
eager. :func:`compile_hot_paths` compiles what holds the FLOPs instead:
every module of the model declares its hot paths in a ``compile_targets``
attribute (names of sub-modules or methods with fixed-shape tensor
inputs), e.g. :class:`~rsrefseg_mm.models.backbones.CLIPBackbone`'s image
and text towers and :class:`~rsrefseg_mm.models.decode_heads.SAMPromptHead`'s
SAM encoder loop (``_encode``).
:class:`~rsrefseg_mm.engine.CompileHotPathsHook` calls it before the train,
val or test loop.
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn

#: children of a segmentor whose ``compile_targets`` are collected
SEGMENTOR_PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head')


def default_compile_targets(model: nn.Module) -> List[str]:
    """Dotted names of the hot paths the parts of ``model`` declare.

    Args:
        model (nn.Module): A segmentor, e.g. ``RSRefSeg``.

    Returns:
        list[str]: E.g. ``['backbone.visual', 'backbone.text',
        'decode_head._encode']``.
    """
    targets = []
    for part in SEGMENTOR_PARTS:
        module = getattr(model, part, None)
        for name in getattr(module, 'compile_targets', ()):
            targets.append(f'{part}.{name}')
    return targets


def _resolve(model: nn.Module, target: str):
    owner_name, _, attr = target.rpartition('.')
    try:
        owner = model.get_submodule(owner_name) if owner_name else model
    except AttributeError as e:
        raise ValueError(f'compile target {target!r}: no sub-module '
                         f'{owner_name!r} in {type(model).__name__}') from e
    if not hasattr(owner, attr):
        raise ValueError(f'compile target {target!r}: '
                         f'{type(owner).__name__} has no attribute {attr!r}')
    return owner, attr


def compile_hot_paths(model: nn.Module,
                      targets: Optional[Sequence[str]] = None,
                      **compile_kwargs) -> List[str]:
    """Compile sub-modules / methods of ``model`` in place.

    A module target is compiled with ``nn.Module.compile`` (its forward and
    hooks; parameters and state-dict keys unchanged); a method target is
    replaced on its instance by ``torch.compile(method)``. Compile after
    copying a model (``copy.deepcopy`` keeps the compiled callables of the
    original).

    Args:
        model (nn.Module): The (unwrapped) model.
        targets (Sequence[str], optional): Dotted names relative to
            ``model``; default :func:`default_compile_targets`.
        **compile_kwargs: ``torch.compile`` arguments (``mode``,
            ``backend``, ``dynamic``, ``fullgraph``, ``options``), e.g.
            ``mode='reduce-overhead'`` for CUDA graphs at inference.

    Returns:
        list[str]: The compiled targets.
    """
    if targets is None:
        targets = default_compile_targets(model)
    if not targets:
        raise ValueError(f'{type(model).__name__} declares no compile '
                         'targets; pass `targets` (e.g. the `targets` '
                         'argument of CompileHotPathsHook)')
    resolved = [_resolve(model, t) for t in targets]
    for owner, attr in resolved:
        value = getattr(owner, attr)
        if isinstance(value, nn.Module):
            value.compile(**compile_kwargs)
        elif callable(value):
            compiled: Callable = torch.compile(value, **compile_kwargs)
            setattr(owner, attr, compiled)
        else:
            raise ValueError(f'compile target {attr!r} of '
                             f'{type(owner).__name__} is neither a module '
                             'nor a method')
    return list(targets)
