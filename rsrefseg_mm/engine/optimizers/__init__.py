from .non_finite_mixin import (SKIPPED_STEPS_KEY, NonFiniteMixin,
                               NonFiniteStepError)
from .skip_non_finite_optim_wrapper import (SkipNonFiniteAmpOptimWrapper,
                                            SkipNonFiniteOptimWrapper)
from .trainable_constructor import (FUSED_OPTIMIZERS,
                                    TrainableParamsOptimWrapperConstructor,
                                    trainable_param_groups)

__all__ = [
    'NonFiniteMixin', 'NonFiniteStepError', 'SKIPPED_STEPS_KEY',
    'SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper',
    'FUSED_OPTIMIZERS', 'TrainableParamsOptimWrapperConstructor',
    'trainable_param_groups'
]
