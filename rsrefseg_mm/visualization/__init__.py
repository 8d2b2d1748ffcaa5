from .referring_visualization_hook import ReferringVisualizationHook
from .referring_visualizer import (ReferringVisualizer, add_caption,
                                   heatmap_overlay)

__all__ = [
    'ReferringVisualizer', 'ReferringVisualizationHook', 'add_caption',
    'heatmap_overlay'
]
