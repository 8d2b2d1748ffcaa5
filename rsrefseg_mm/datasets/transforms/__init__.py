from .formatting import PackReferringInputs
from .loading import LoadReferringAnnotations

__all__ = ['LoadReferringAnnotations', 'PackReferringInputs']
