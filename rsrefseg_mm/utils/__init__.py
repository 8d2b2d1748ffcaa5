from .checkpoint import load_from_local
from .config import drop_pretrained_checkpoints
from .dist import use_gloo_without_cuda

__all__ = [
    'load_from_local', 'drop_pretrained_checkpoints', 'use_gloo_without_cuda'
]
