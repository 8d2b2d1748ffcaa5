from .lora_conv import LoRAConv2d
from .lora_linear import MergedInferenceLoRALinear
from .merge import merge_lora
from .tuning import TUNING_MODES, apply_lora, apply_tuning, is_trainable

__all__ = [
    'LoRAConv2d', 'MergedInferenceLoRALinear', 'merge_lora', 'TUNING_MODES',
    'apply_lora', 'apply_tuning', 'is_trainable'
]
