"""Skip optimizer steps whose loss or gradients are not finite."""
import logging
from typing import List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.logging import MessageHub, print_log
from torch.nn.utils import get_total_norm

#: Message-hub key of the skipped-step counter (printed in the train log).
SKIPPED_STEPS_KEY = 'train/skipped_steps'


class NonFiniteStepError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss/gradient."""


class NonFiniteMixin:
    """Mixin for mmengine optimizer wrappers: skip non-finite steps.

    One NaN/inf loss or gradient applied by the optimizer poisons every
    weight it touches (AdamW's moments keep the NaN for good); mmengine's
    wrappers apply it (``AmpOptimWrapper``'s ``GradScaler`` skips float16
    overflows, but not a NaN loss under bf16 or fp32). Put this class first
    among the bases, e.g. ``class X(NonFiniteMixin, OptimWrapper)``:

    * :meth:`update_params` notes whether each micro-batch loss is finite;
    * :meth:`step` runs the wrapper's own ``step`` only when that loss and
      every gradient are finite. Otherwise the step is skipped (the
      gradients are zeroed as usual), a warning is logged and the counters
      grow; :meth:`after_skipped_step` lets a subclass react (e.g. lower a
      loss scale).

    The total is written to the message hub as ``train/skipped_steps`` at
    every step, so each train log line shows it. After
    ``max_consecutive_skips`` skipped steps in a row training stops with
    :class:`NonFiniteStepError` (a run that only skips learns nothing).
    Under distributed training the decision is all-reduced, so every rank
    skips the same steps. Only the optimizer update is guarded: buffers that
    the forward pass updates (BatchNorm running statistics) see a NaN input
    before any check can run.

    Args:
        max_consecutive_skips (int, optional): Consecutive skipped steps
            that raise :class:`NonFiniteStepError`; None never raises.
            Defaults to 20.
        *args, **kwargs: Arguments of the optimizer wrapper.
    """

    optimizer: torch.optim.Optimizer

    def __init__(self,
                 *args,
                 max_consecutive_skips: Optional[int] = 20,
                 **kwargs) -> None:
        if max_consecutive_skips is not None and (
                isinstance(max_consecutive_skips, bool)
                or not isinstance(max_consecutive_skips, int)
                or max_consecutive_skips < 1):
            raise ValueError('max_consecutive_skips must be a positive int '
                             f'or None, got {max_consecutive_skips!r}')
        super().__init__(*args, **kwargs)
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._loss_finite: Optional[torch.Tensor] = None

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
        finite = torch.isfinite(loss.detach()).all()  # no device sync
        self._loss_finite = finite if self._loss_finite is None else \
            self._loss_finite & finite
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        """The wrapper's ``step`` unless the loss or a gradient is not
        finite.

        Args:
            kwargs: Keyword arguments for ``optimizer.step``.

        Raises:
            NonFiniteStepError: ``max_consecutive_skips`` steps in a row
                were skipped.
        """
        if self._step_is_finite():
            self.consecutive_skips = 0
            self._log_count()
            super().step(**kwargs)
            return
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self._log_count()
        self.after_skipped_step()
        limit = self.max_consecutive_skips
        print_log(
            'non-finite loss or gradient (NaN/inf): optimizer step skipped '
            f'({self.consecutive_skips} in a row'
            f'{f" of at most {limit}" if limit else ""}, '
            f'{self.skipped_steps} in total)',
            logger='current',
            level=logging.WARNING)
        if limit is not None and self.consecutive_skips >= limit:
            raise NonFiniteStepError(
                f'{self.consecutive_skips} consecutive optimizer steps had a '
                'non-finite loss or gradient and were skipped: training '
                'diverged or the data holds NaN/inf. Lower the learning rate, '
                'enable gradient clipping (optim_wrapper.clip_grad), check '
                'the inputs, or raise optim_wrapper.max_consecutive_skips.')

    def after_skipped_step(self) -> None:
        """Called after a skipped step (before the gradients are zeroed);
        nothing to do for fp32."""

    def _grads(self) -> List[torch.Tensor]:
        return [
            p.grad for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]

    def _step_is_finite(self) -> bool:
        grads = self._grads()
        device = grads[0].device if grads else torch.device('cpu')
        finite = torch.ones((), dtype=torch.bool, device=device)
        if grads:
            # max |g| over all gradients: NaN and inf propagate
            finite &= torch.isfinite(
                get_total_norm(grads, norm_type=float('inf')))
        if self._loss_finite is not None:
            finite &= self._loss_finite.to(device)
        self._loss_finite = None
        if torch_dist.is_available() and torch_dist.is_initialized() and \
                torch_dist.get_world_size() > 1:
            flag = (~finite).to(torch.int32)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            finite = flag == 0
        return bool(finite)

    def _log_count(self) -> None:
        MessageHub.get_current_instance().update_scalar(
            SKIPPED_STEPS_KEY, self.skipped_steps)
