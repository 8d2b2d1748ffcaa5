from .tuning import TUNING_MODES, apply_lora, apply_tuning, is_trainable

__all__ = ['TUNING_MODES', 'apply_lora', 'apply_tuning', 'is_trainable']
