from .base_text_image_backbone import BaseTextImageBackbone  # noqa: F401
from .clip import *  # noqa: F401,F403
from .clip import __all__ as _clip_all
from .siglip import *  # noqa: F401,F403
from .siglip import __all__ as _siglip_all

__all__ = ['BaseTextImageBackbone'] + _clip_all + _siglip_all
