from .cascaded_prompter import CascadedPrompter
from .text_filter_neck import TextFilterNeck

__all__ = ['CascadedPrompter', 'TextFilterNeck']
