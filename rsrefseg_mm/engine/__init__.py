from .hooks import ReferringVisualizationHook
from .optimizers import (SKIPPED_STEPS_KEY, AnyDeviceAmpOptimWrapper,
                         IdentityLossScaler, NonFiniteGuard,
                         NonFiniteStepError, SkipNonFiniteOptimWrapper,
                         model_device_type)

__all__ = [
    'ReferringVisualizationHook', 'AnyDeviceAmpOptimWrapper',
    'IdentityLossScaler', 'model_device_type', 'NonFiniteGuard',
    'NonFiniteStepError', 'SKIPPED_STEPS_KEY', 'SkipNonFiniteOptimWrapper'
]
