from .clip_backbone import CLIP_MEAN, CLIP_STD, CLIPBackbone
from .clip_checkpoint import (convert_clip_state_dict, infer_clip_arch,
                              is_torchscript_archive, load_clip_checkpoint,
                              load_clip_file)
from .clip_tokenizer import CLIPTokenizer
from .clip_transformer import (CLIPAttention, CLIPResidualBlock, CLIPTextTower,
                               CLIPTransformer, CLIPVisionTower, QuickGELU,
                               resize_pos_embed)

__all__ = [
    'CLIPBackbone', 'CLIP_MEAN', 'CLIP_STD', 'convert_clip_state_dict',
    'infer_clip_arch', 'is_torchscript_archive', 'load_clip_checkpoint',
    'load_clip_file', 'CLIPTokenizer', 'CLIPAttention', 'CLIPResidualBlock',
    'CLIPTextTower', 'CLIPTransformer', 'CLIPVisionTower', 'QuickGELU',
    'resize_pos_embed'
]
