"""Optimizer over the trainable parameters only, fused on CUDA.

mmengine's ``DefaultOptimWrapperConstructor`` hands every parameter of the
model to the optimizer, frozen ones included. With LoRA, 9.5 M of
RSRefSeg-b's ~250 M parameters train; the frozen base weights never get a
gradient (``requires_grad=False``: autograd computes no weight gradient
for them), so the optimizer skips them at each step, but they still sit in
its parameter groups, and the multi-tensor / fused kernels are chosen for
the whole list. :class:`TrainableParamsOptimWrapperConstructor` builds the
optimizer from the parameters that require a gradient and, on CUDA, asks
PyTorch for its fused Adam/AdamW/SGD kernel (one kernel launch for all
parameters) unless the optimizer config sets ``fused`` or ``foreach``.
"""
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                            OPTIMIZERS)

#: optimizers with a ``fused`` CUDA implementation in PyTorch
FUSED_OPTIMIZERS = ('Adam', 'AdamW', 'SGD', 'Adagrad')


def trainable_param_groups(groups: List[dict]) -> List[dict]:
    """Drop the frozen parameters from mmengine-style param groups.

    Args:
        groups (list[dict]): Groups with a ``params`` list each (as built
            by ``DefaultOptimWrapperConstructor.add_params``).

    Returns:
        list[dict]: Groups that still hold a parameter.
    """
    out = []
    for group in groups:
        params = [p for p in group['params'] if p.requires_grad]
        if params:
            out.append({**group, 'params': params})
    return out


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableParamsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` restricted to trainable
    parameters, with PyTorch's fused kernel on CUDA.

    Config::

        optim_wrapper = dict(
            type='SkipNonFiniteAmpOptimWrapper', dtype='bfloat16',
            constructor='TrainableParamsOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))

    ``paramwise_cfg`` works as in mmengine (groups are built for every
    parameter, then frozen ones are dropped). ``fused=True`` is added to
    the optimizer config when its type is in :data:`FUSED_OPTIMIZERS`, it
    sets neither ``fused`` nor ``foreach``, and every trainable parameter
    is on a CUDA device (the model is moved there before the optimizer is
    built). The parameters of frozen modules get no optimizer state, so a
    checkpoint's optimizer state lists only the trainable ones.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper of ``model``.

        Args:
            model (nn.Module): The model (DDP wrappers are unwrapped).

        Returns:
            OptimWrapper: Built from ``optim_wrapper_cfg``.

        Raises:
            ValueError: ``model`` has no trainable parameter.
        """
        if hasattr(model, 'module'):
            model = model.module
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        if self.paramwise_cfg:
            groups: List = []
            self.add_params(groups, model)
            params = trainable_param_groups(groups)
            tensors = [p for g in params for p in g['params']]
        else:
            params = [p for p in model.parameters() if p.requires_grad]
            tensors = params
        if not tensors:
            raise ValueError(f'{type(model).__name__} has no trainable '
                             'parameter to optimise')
        fused = self.fused_default(optimizer_cfg, tensors)
        if fused is not None:
            optimizer_cfg['fused'] = fused
        optimizer_cfg['params'] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(
            optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

    @staticmethod
    def fused_default(optimizer_cfg: dict,
                      params: List[torch.Tensor]) -> Optional[bool]:
        """``True`` when the fused kernel should be requested, else None
        (the optimizer config is left as it is).

        Args:
            optimizer_cfg (dict): The ``optimizer`` config.
            params (list[Tensor]): The trainable parameters.
        """
        if 'fused' in optimizer_cfg or 'foreach' in optimizer_cfg:
            return None
        opt_type = optimizer_cfg.get('type')
        name = opt_type if isinstance(opt_type, str) else \
            getattr(opt_type, '__name__', '')
        if name not in FUSED_OPTIMIZERS:
            return None
        if all(p.device.type == 'cuda' for p in params):
            return True
        return None
