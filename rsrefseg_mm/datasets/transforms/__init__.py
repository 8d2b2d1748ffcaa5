from .formatting import PackReferringInputs
from .loading import LoadReferringAnnotations, LoadReferringImageFromFile

__all__ = [
    'LoadReferringAnnotations', 'LoadReferringImageFromFile',
    'PackReferringInputs'
]
