from .sam_prompt_head import SAMPromptHead

__all__ = ['SAMPromptHead']
