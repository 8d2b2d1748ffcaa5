from .captions import add_caption, label_panel, text_band
from .overlays import draw_mask_overlay, heatmap_overlay, mask_iou
from .referring_visualizer import ReferringVisualizer

__all__ = [
    'ReferringVisualizer', 'add_caption', 'label_panel', 'text_band',
    'draw_mask_overlay', 'heatmap_overlay', 'mask_iou'
]
