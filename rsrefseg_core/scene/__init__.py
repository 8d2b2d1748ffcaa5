"""Whole scenes at the file's resolution: the window grid, windows read
from the file, their encodings kept in memory or a file, probabilities
averaged across overlaps strip by strip, and the predictor that ties them
to a runtime (PyTorch or ONNX Runtime)."""
from .embeddings import (DEFAULT_MEMORY_LIMIT, EmbeddingsFileError,
                         WindowEmbeddings)
from .grid import SceneGrid, check_window_args, window_boxes
from .mosaic import ProbabilityMosaic
from .outputs import SceneOutputs
from .predictor import ScenePredictor, SceneResult, SceneRuntime
from .reader import SceneReader

__all__ = [
    'DEFAULT_MEMORY_LIMIT', 'EmbeddingsFileError', 'WindowEmbeddings',
    'SceneGrid', 'check_window_args', 'window_boxes', 'ProbabilityMosaic',
    'SceneOutputs', 'ScenePredictor', 'SceneResult', 'SceneRuntime',
    'SceneReader'
]
