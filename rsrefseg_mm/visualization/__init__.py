from .referring_visualizer import (ReferringVisualizer, add_caption,
                                   heatmap_overlay)

__all__ = ['ReferringVisualizer', 'add_caption', 'heatmap_overlay']
