from .text_filter_neck import TextFilterNeck

__all__ = ['TextFilterNeck']
