from .inference import (GeoMask, georeferenced_mask, inference_referring,
                        init_referring_model, load_referring_image)
from .outputs import render_heatmap, render_overlay, save_referring_outputs

__all__ = [
    'init_referring_model', 'inference_referring', 'load_referring_image',
    'georeferenced_mask', 'GeoMask', 'save_referring_outputs',
    'render_overlay', 'render_heatmap'
]
