from .base_text_image_backbone import BaseTextImageBackbone
from .clip import *  # noqa: F401,F403
from .siglip import *  # noqa: F401,F403
