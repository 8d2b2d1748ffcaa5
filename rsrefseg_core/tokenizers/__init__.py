from .clip_bpe import CLIPBPE, basic_clean, whitespace_clean
from .gemma_spm import GemmaSentencePiece
from .siglip_spm import SigLIPSentencePiece, canonicalize_text

__all__ = [
    'CLIPBPE', 'basic_clean', 'whitespace_clean', 'GemmaSentencePiece',
    'SigLIPSentencePiece', 'canonicalize_text'
]
