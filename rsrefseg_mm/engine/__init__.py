from .compiler import compile_hot_paths, default_compile_targets
from .fsdp_wrapper import ScalarSafeFSDP, scalar_parameters
from .hooks import CompileHotPathsHook, ReferringVisualizationHook
from .optimizers import (SKIPPED_STEPS_KEY, NonFiniteMixin, NonFiniteStepError,
                         SkipNonFiniteAmpOptimWrapper,
                         SkipNonFiniteOptimWrapper,
                         TrainableParamsOptimWrapperConstructor)
from .runner import RSRefSegRunner

__all__ = [
    'CompileHotPathsHook', 'ReferringVisualizationHook', 'NonFiniteMixin',
    'NonFiniteStepError', 'SKIPPED_STEPS_KEY', 'SkipNonFiniteOptimWrapper',
    'SkipNonFiniteAmpOptimWrapper', 'RSRefSegRunner', 'ScalarSafeFSDP',
    'TrainableParamsOptimWrapperConstructor', 'compile_hot_paths',
    'default_compile_targets', 'scalar_parameters'
]
