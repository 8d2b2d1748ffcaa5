"""A no-op loss scaler for bfloat16 mixed precision."""
from typing import Optional

import torch


class IdentityLossScaler:
    """No-op stand-in for ``GradScaler`` (bf16 needs no loss scaling).

    Implements the methods :class:`~mmengine.optim.AmpOptimWrapper` calls.
    """

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """Return ``loss`` unchanged."""
        return loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing to unscale."""

    def step(self, optimizer: torch.optim.Optimizer, *args, **kwargs):
        """Plain ``optimizer.step`` (non-finite steps are skipped before, by
        :class:`~rsrefseg_mm.engine.optimizers.NonFiniteGuard`)."""
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: Optional[float] = None) -> None:
        """Nothing to update."""

    def get_scale(self) -> float:
        """The constant scale 1.0."""
        return 1.0

    def is_enabled(self) -> bool:
        """False: gradients are never scaled."""
        return False

    def state_dict(self) -> dict:
        """Empty: there is no state."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Ignore a saved scaler state (e.g. from an fp16 run)."""
