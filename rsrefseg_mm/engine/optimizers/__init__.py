from .amp_optim_wrapper import AnyDeviceAmpOptimWrapper, model_device_type
from .identity_loss_scaler import IdentityLossScaler
from .non_finite_guard import (SKIPPED_STEPS_KEY, NonFiniteGuard,
                               NonFiniteStepError)
from .skip_non_finite_optim_wrapper import SkipNonFiniteOptimWrapper
from .trainable_constructor import (FUSED_OPTIMIZERS,
                                    TrainableParamsOptimWrapperConstructor,
                                    trainable_param_groups)

__all__ = [
    'AnyDeviceAmpOptimWrapper', 'IdentityLossScaler', 'model_device_type',
    'NonFiniteGuard', 'NonFiniteStepError', 'SKIPPED_STEPS_KEY',
    'SkipNonFiniteOptimWrapper', 'FUSED_OPTIMIZERS',
    'TrainableParamsOptimWrapperConstructor', 'trainable_param_groups'
]
