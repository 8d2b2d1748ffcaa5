from .hooks import ReferringVisualizationHook
from .optimizers import (AnyDeviceAmpOptimWrapper, IdentityLossScaler,
                         model_device_type)

__all__ = [
    'ReferringVisualizationHook', 'AnyDeviceAmpOptimWrapper',
    'IdentityLossScaler', 'model_device_type'
]
