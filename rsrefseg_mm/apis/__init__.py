from .inference import (GeoMask, georeferenced_mask, inference_referring,
                        init_referring_model)
from .outputs import render_heatmap, render_overlay, save_referring_outputs
from .pipeline import build_test_pipeline, load_referring_image, working_size
from .predictor import ReferringPredictor

__all__ = [
    'init_referring_model', 'inference_referring', 'ReferringPredictor',
    'load_referring_image', 'build_test_pipeline', 'georeferenced_mask',
    'GeoMask', 'save_referring_outputs', 'render_overlay', 'render_heatmap',
    'working_size'
]
