from .rsrefseg import RSRefSeg, count_parameters

__all__ = ['RSRefSeg', 'count_parameters']
