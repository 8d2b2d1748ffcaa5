from .checkpoint import load_from_local
from .dist import use_gloo_without_cuda

__all__ = ['load_from_local', 'use_gloo_without_cuda']
