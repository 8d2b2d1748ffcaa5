"""Skip optimizer steps whose loss or gradients are not finite."""
import logging
from typing import Iterable, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.logging import MessageHub, print_log
from torch.nn.utils import get_total_norm

#: Message-hub key of the skipped-step counter (printed in the train log).
SKIPPED_STEPS_KEY = 'train/skipped_steps'


class NonFiniteStepError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss/gradient."""


class NonFiniteGuard:
    """Decide whether an optimizer step may run, count the ones that may not.

    One NaN/inf loss or gradient applied by the optimizer poisons every
    weight it touches (AdamW's moments keep the NaN for good). The optim
    wrappers ask :meth:`check` before each step: when the loss of any
    micro-batch since the last step (see :meth:`observe_loss`) or any
    gradient is non-finite, the step is skipped, a warning is logged and the
    counters grow. The total is written to the message hub as
    ``train/skipped_steps`` at every step, so each train log line shows it.
    After ``max_consecutive_skips`` skipped steps in a row training stops
    with :class:`NonFiniteStepError` (a run that only skips learns nothing).
    Under distributed training the decision is all-reduced, so every rank
    skips the same steps. Only the optimizer update is guarded: buffers that
    the forward pass updates (BatchNorm running statistics) see a NaN input
    before any check can run.

    Args:
        max_consecutive_skips (int, optional): Consecutive skipped steps
            that raise :class:`NonFiniteStepError`; None never raises.
            Defaults to 20.
    """

    def __init__(self, max_consecutive_skips: Optional[int] = 20) -> None:
        if max_consecutive_skips is not None and (
                isinstance(max_consecutive_skips, bool)
                or not isinstance(max_consecutive_skips, int)
                or max_consecutive_skips < 1):
            raise ValueError('max_consecutive_skips must be a positive int '
                             f'or None, got {max_consecutive_skips!r}')
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._loss_finite: Optional[torch.Tensor] = None

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Remember whether a micro-batch loss is finite (no device sync).

        Args:
            loss (Tensor): The loss passed to ``update_params``.
        """
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else \
            self._loss_finite & finite

    @staticmethod
    def _grads(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
        return [
            p.grad for group in optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]

    def _step_is_finite(self, grads: Iterable[torch.Tensor],
                        device: torch.device) -> bool:
        finite = torch.ones((), dtype=torch.bool, device=device)
        grads = list(grads)
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

    def check(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the pending step may run; counts, logs, raises if not.

        Call it after the gradients are unscaled (AMP) and before clipping.

        Args:
            optimizer (Optimizer): The wrapped optimizer (its gradients are
                inspected).

        Returns:
            bool: True to step, False to skip this step.

        Raises:
            NonFiniteStepError: ``max_consecutive_skips`` steps in a row
                were skipped.
        """
        grads = self._grads(optimizer)
        device = grads[0].device if grads else torch.device('cpu')
        finite = self._step_is_finite(grads, device)
        if finite:
            self.consecutive_skips = 0
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        MessageHub.get_current_instance().update_scalar(
            SKIPPED_STEPS_KEY, self.skipped_steps)
        if finite:
            return True
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
        return False
