"""fp32 optimizer wrapper that skips steps with a non-finite loss/gradient."""
from typing import Optional

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS

from .non_finite_guard import NonFiniteGuard


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` guarded against NaN/inf steps.

    Same behaviour and checkpoint layout as
    :class:`~mmengine.optim.OptimWrapper`, except that a step whose loss (of
    any micro-batch since the last step) or whose gradients are not finite is
    skipped (the gradients are zeroed as usual), logged and counted in
    ``train/skipped_steps``; ``max_consecutive_skips`` skipped steps in a row
    raise :class:`~rsrefseg_mm.engine.optimizers.NonFiniteStepError` (see
    :class:`~rsrefseg_mm.engine.optimizers.NonFiniteGuard`). In a config:
    ``optim_wrapper = dict(type='SkipNonFiniteOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3), max_consecutive_skips=20)``.

    Args:
        optimizer (Optimizer): The optimizer (built by mmengine).
        max_consecutive_skips (int, optional): Consecutive skipped steps that
            stop training; None never stops. Defaults to 20.
        **kwargs: ``OptimWrapper`` arguments (``accumulative_counts``,
            ``clip_grad``).
    """

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 max_consecutive_skips: Optional[int] = 20,
                 **kwargs) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.non_finite = NonFiniteGuard(max_consecutive_skips)

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
        """Clip and step unless the loss or a gradient is non-finite.

        Args:
            kwargs: Keyword arguments for ``optimizer.step``.
        """
        if self.non_finite.check(self.optimizer):
            super().step(**kwargs)
