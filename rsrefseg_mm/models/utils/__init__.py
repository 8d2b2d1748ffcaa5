from .clip_tokenizer import CLIPTokenizer
from .lora_conv import LoRAConv2d
from .sam_builder import (SAM_ARCHS, SAM_CHECKPOINTS, SAM_DEFAULTS,
                          build_sam_modules, load_sam_checkpoint,
                          sam_arch_settings)
from .sam_fast_attention import (REL_POS_MODES, SAMFastAttention,
                                 augmented_rel_pos_attention,
                                 chunked_rel_pos_attention,
                                 decomposed_rel_pos_bias,
                                 decomposed_rel_pos_terms,
                                 enable_fast_attention)
from .sam_mask_decoder import PairedMaskDecoder
from .siglip_tokenizer import SigLIPTokenizer, canonicalize_text
from .tuning import TUNING_MODES, apply_lora, apply_tuning, is_trainable

__all__ = [
    'CLIPTokenizer', 'SAM_ARCHS', 'SAM_CHECKPOINTS', 'SAM_DEFAULTS',
    'build_sam_modules', 'load_sam_checkpoint', 'sam_arch_settings',
    'REL_POS_MODES', 'SAMFastAttention', 'augmented_rel_pos_attention',
    'chunked_rel_pos_attention', 'decomposed_rel_pos_bias',
    'decomposed_rel_pos_terms', 'enable_fast_attention',
    'PairedMaskDecoder', 'TUNING_MODES', 'apply_lora', 'apply_tuning',
    'is_trainable', 'LoRAConv2d', 'SigLIPTokenizer', 'canonicalize_text'
]
