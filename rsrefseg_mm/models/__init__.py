from .backbones import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .peft import *  # noqa: F401,F403
from .sam import *  # noqa: F401,F403
from .sam2 import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
