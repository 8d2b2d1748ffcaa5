from .compiler import compile_hot_paths, default_compile_targets
from .hooks import ReferringVisualizationHook
from .optimizers import (SKIPPED_STEPS_KEY, AnyDeviceAmpOptimWrapper,
                         IdentityLossScaler, NonFiniteGuard,
                         NonFiniteStepError, SkipNonFiniteOptimWrapper,
                         TrainableParamsOptimWrapperConstructor,
                         model_device_type)
from .runner import RSRefSegRunner

__all__ = [
    'ReferringVisualizationHook', 'AnyDeviceAmpOptimWrapper',
    'IdentityLossScaler', 'model_device_type', 'NonFiniteGuard',
    'NonFiniteStepError', 'SKIPPED_STEPS_KEY', 'SkipNonFiniteOptimWrapper',
    'RSRefSegRunner', 'TrainableParamsOptimWrapperConstructor',
    'compile_hot_paths', 'default_compile_targets'
]
