"""Mixed-precision optimizer wrapper that also trains on CPU (bf16).

mmengine 0.10's :class:`~mmengine.optim.AmpOptimWrapper` asserts that a
GPU/NPU/MLU/MUSA device is present and always scales the loss with
``torch.cuda.amp.GradScaler``; its autocast context takes the device type
from ``mmengine.device.get_device()`` rather than from the model.
:class:`AnyDeviceAmpOptimWrapper` keeps the same config interface and
checkpoint layout and differs in three points:

* bf16 (``dtype='bfloat16'``) runs on any device, CPU included;
* bf16 is not loss-scaled: it has float32's exponent range, so gradients do
  not underflow (an identity scaler keeps ``state_dict()['loss_scaler']``);
* autocast uses the device of the model's parameters;
* a step whose loss or gradients are not finite is skipped, counted and,
  after ``max_consecutive_skips`` in a row, an error
  (:class:`~rsrefseg_mm.engine.optimizers.NonFiniteGuard`; for float16 the
  ``GradScaler`` also lowers its scale as usual).

float16 keeps mmengine's behaviour (dynamic ``GradScaler``) and needs an
accelerator: PyTorch's CPU autocast is bf16-only.
"""
import logging
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.device import (get_device, is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS

from .identity_loss_scaler import IdentityLossScaler
from .non_finite_guard import NonFiniteGuard


def _accelerator_available() -> bool:
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def model_device_type(model: nn.Module) -> str:
    """Device type (``'cpu'``, ``'cuda'``, ...) of the first parameter.

    Falls back to ``mmengine.device.get_device()`` for a parameter-less
    model.
    """
    for p in model.parameters():
        return p.device.type
    return get_device()


@OPTIM_WRAPPERS.register_module()
class AnyDeviceAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` that also runs bf16 autocast on CPU.

    Same arguments as :class:`~mmengine.optim.AmpOptimWrapper`. Use it in a
    config as ``optim_wrapper = dict(type='AnyDeviceAmpOptimWrapper',
    dtype='bfloat16', optimizer=...)``; ``tools/train.py --amp`` selects it.

    Args:
        loss_scale (float | str | dict): ``GradScaler`` settings, used for
            float16 only (bf16 is not scaled; a non-default value is
            ignored with a warning). Defaults to ``'dynamic'``.
        dtype (str | torch.dtype, optional): Autocast dtype. Defaults to
            ``'bfloat16'`` (mmengine's default, None, means float16 on CUDA,
            which would not run on CPU).
        use_fsdp (bool): ``ShardedGradScaler`` for float16 under FSDP.
        max_consecutive_skips (int, optional): Consecutive skipped
            (non-finite) steps that stop training; None never stops.
            Defaults to 20.
        **kwargs: :class:`~mmengine.optim.OptimWrapper` arguments
            (``optimizer``, ``accumulative_counts``, ``clip_grad``).

    Raises:
        ValueError: ``dtype`` is not bfloat16 and no accelerator is present.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = 'bfloat16',
                 use_fsdp: bool = False,
                 max_consecutive_skips: Optional[int] = 20,
                 **kwargs) -> None:
        self.non_finite = NonFiniteGuard(max_consecutive_skips)
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'dtype should be one of {self.valid_dtypes}'
                                 f', got {dtype!r}')
            dtype = getattr(torch, dtype)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f'dtype should be None, a str or a torch.dtype, '
                            f'got {type(dtype)}')
        if dtype != torch.bfloat16:
            if not _accelerator_available():
                raise ValueError(
                    f'AnyDeviceAmpOptimWrapper: autocast dtype {dtype} needs '
                    'a GPU (CPU autocast supports bfloat16 only); set '
                    "dtype='bfloat16'")
            super().__init__(
                loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp,
                **kwargs)
            return
        # bf16: skip AmpOptimWrapper.__init__ (GPU assert + GradScaler).
        OptimWrapper.__init__(self, **kwargs)
        if loss_scale != 'dynamic':
            print_log(
                f'AnyDeviceAmpOptimWrapper: loss_scale={loss_scale!r} is '
                'ignored, bfloat16 gradients are not scaled',
                logger='current',
                level=logging.WARNING)
        self._scale_update_param = None
        self.loss_scaler = IdentityLossScaler()
        self.cast_dtype = dtype

    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[dict] = None,
                      zero_kwargs: Optional[dict] = None) -> None:
        """Backward (and step when due), noting whether ``loss`` is finite.

        Args:
            loss (Tensor): The loss to back-propagate.
            step_kwargs (dict, optional): For ``optimizer.step``.
            zero_kwargs (dict, optional): For ``optimizer.zero_grad``.
        """
        self.non_finite.observe_loss(loss)
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        """Unscale, skip a non-finite step, clip, step, update the scaler.

        Args:
            kwargs: Keyword arguments for ``optimizer.step``.
        """
        # unscaled first, so that the check and clipping see true gradients
        self.loss_scaler.unscale_(self.optimizer)
        if self.non_finite.check(self.optimizer):
            if self.clip_grad_kwargs:
                self._clip_grad()
            self.loss_scaler.step(self.optimizer, **kwargs)
        # float16: the GradScaler lowers its scale after an inf/NaN
        self.loss_scaler.update(self._scale_update_param)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context plus autocast on the model's device.

        Args:
            model (nn.Module): The training model.
        """
        with OptimWrapper.optim_context(self, model), autocast(
                device_type=model_device_type(model), dtype=self.cast_dtype):
            yield
