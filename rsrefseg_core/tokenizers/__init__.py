from .clip_bpe import CLIPBPE, basic_clean, whitespace_clean
from .siglip_spm import SigLIPSentencePiece, canonicalize_text

__all__ = [
    'CLIPBPE', 'basic_clean', 'whitespace_clean', 'SigLIPSentencePiece',
    'canonicalize_text'
]
