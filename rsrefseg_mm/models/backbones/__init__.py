from .clip_backbone import CLIP_MEAN, CLIP_STD, CLIPBackbone
from .clip_checkpoint import (convert_clip_state_dict, infer_clip_arch,
                              is_torchscript_archive, load_clip_checkpoint,
                              load_clip_file)
from .clip_transformer import (CLIPAttention, CLIPResidualBlock,
                               CLIPTextTower, CLIPTransformer,
                               CLIPVisionTower, QuickGELU, resize_pos_embed)
from .siglip_backbone import SigLIPBackbone
from .siglip_checkpoint import (SIGLIP_FILES, convert_open_clip_siglip,
                                load_siglip_checkpoint, load_siglip_file)
from .siglip_transformer import SiglipTextTower, SiglipVisionTower

__all__ = [
    'CLIPBackbone', 'CLIP_MEAN', 'CLIP_STD', 'convert_clip_state_dict',
    'infer_clip_arch', 'is_torchscript_archive', 'load_clip_checkpoint',
    'load_clip_file', 'CLIPAttention', 'CLIPResidualBlock', 'CLIPTextTower',
    'CLIPTransformer', 'CLIPVisionTower', 'QuickGELU', 'resize_pos_embed',
    'SigLIPBackbone', 'SIGLIP_FILES', 'convert_open_clip_siglip',
    'load_siglip_checkpoint', 'load_siglip_file', 'SiglipTextTower',
    'SiglipVisionTower'
]
