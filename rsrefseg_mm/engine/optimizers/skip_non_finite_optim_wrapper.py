"""mmengine's optimizer wrappers with the non-finite step guard."""
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS

from .non_finite_mixin import NonFiniteMixin


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(NonFiniteMixin, OptimWrapper):
    """mmengine's ``OptimWrapper`` guarded against NaN/inf steps.

    Same behaviour, arguments and checkpoint layout as
    :class:`~mmengine.optim.OptimWrapper`, plus ``max_consecutive_skips``
    (see :class:`~rsrefseg_mm.engine.optimizers.NonFiniteMixin`). In a
    config::

        optim_wrapper = dict(
            type='SkipNonFiniteOptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-3),
            max_consecutive_skips=20)
    """


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteAmpOptimWrapper(NonFiniteMixin, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` guarded against NaN/inf steps.

    Same behaviour, arguments and checkpoint layout as
    :class:`~mmengine.optim.AmpOptimWrapper` (so it needs a GPU, NPU, MLU
    or MUSA device), plus ``max_consecutive_skips`` (see
    :class:`~rsrefseg_mm.engine.optimizers.NonFiniteMixin`). The check sees
    the loss-scaled gradients, which are finite exactly when the unscaled
    ones are; after a skipped step the ``GradScaler`` still records the
    overflow and lowers its scale. In a config::

        optim_wrapper = dict(
            type='SkipNonFiniteAmpOptimWrapper',
            dtype='bfloat16',
            optimizer=dict(type='AdamW', lr=1e-4),
            max_consecutive_skips=20)
    """

    def after_skipped_step(self) -> None:
        """Let the loss scaler see the skipped step's inf/NaN gradients."""
        self.loss_scaler.unscale_(self.optimizer)
        self.loss_scaler.update(self._scale_update_param)
