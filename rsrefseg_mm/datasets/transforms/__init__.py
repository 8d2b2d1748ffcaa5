from .formatting import PackReferringInputs
from .loading import LoadReferringAnnotations, LoadReferringImageFromFile
from .referring_flip import ReferringRandomFlip, flip_referring_text

__all__ = [
    'LoadReferringAnnotations', 'LoadReferringImageFromFile',
    'PackReferringInputs', 'ReferringRandomFlip', 'flip_referring_text'
]
