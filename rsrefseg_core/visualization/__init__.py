from .captions import add_caption, label_panel, text_band
from .overlays import (FILL_ALPHA, PRED_COLOR, display_scale,
                       draw_mask_overlay, enlarge, heatmap_overlay, mask_iou)

__all__ = [
    'add_caption', 'label_panel', 'text_band', 'FILL_ALPHA', 'PRED_COLOR',
    'display_scale', 'draw_mask_overlay', 'enlarge', 'heatmap_overlay',
    'mask_iou'
]
