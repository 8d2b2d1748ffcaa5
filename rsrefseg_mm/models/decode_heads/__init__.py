from .base_prompt_head import BasePromptHead
from .sam2_prompt_head import SAM2PromptHead
from .sam_prompt_head import SAMPromptHead

__all__ = ['BasePromptHead', 'SAMPromptHead', 'SAM2PromptHead']
