from rsrefseg_core.visualization import (add_caption, draw_mask_overlay,
                                         heatmap_overlay, label_panel,
                                         mask_iou, text_band)
from .referring_visualizer import ReferringVisualizer

__all__ = [
    'ReferringVisualizer', 'add_caption', 'label_panel', 'text_band',
    'draw_mask_overlay', 'heatmap_overlay', 'mask_iou'
]
