from .amp_optim_wrapper import (AnyDeviceAmpOptimWrapper, IdentityLossScaler,
                                model_device_type)

__all__ = [
    'AnyDeviceAmpOptimWrapper', 'IdentityLossScaler', 'model_device_type'
]
