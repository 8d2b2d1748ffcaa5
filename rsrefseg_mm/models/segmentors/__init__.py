from .referring_tta import ReferringTTAModel
from .rsrefseg import RSRefSeg, count_parameters

__all__ = ['RSRefSeg', 'ReferringTTAModel', 'count_parameters']
