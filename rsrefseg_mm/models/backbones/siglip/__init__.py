from .siglip2_tokenizer import SigLIP2Tokenizer
from .siglip_backbone import SigLIPBackbone
from .siglip_checkpoint import (SIGLIP_FILES, TOKENIZER_FILES,
                                arch_tokenizer_type, convert_open_clip_siglip,
                                load_siglip_checkpoint, load_siglip_file,
                                siglip_tokenizer_path)
from .siglip_tokenizer import SigLIPTokenizer, canonicalize_text
from .siglip_transformer import SiglipTextTower, SiglipVisionTower

__all__ = [
    'SigLIPBackbone', 'SIGLIP_FILES', 'TOKENIZER_FILES', 'arch_tokenizer_type',
    'convert_open_clip_siglip', 'load_siglip_checkpoint', 'load_siglip_file',
    'siglip_tokenizer_path', 'SigLIPTokenizer', 'SigLIP2Tokenizer',
    'canonicalize_text', 'SiglipTextTower', 'SiglipVisionTower'
]
