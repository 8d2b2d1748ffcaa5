from .clip_tokenizer import CLIPTokenizer
from .lora_conv import LoRAConv2d
from .sam_builder import (SAM_ARCHS, SAM_CHECKPOINTS, SAM_DEFAULTS,
                          build_sam_modules, load_sam_checkpoint,
                          sam_arch_settings)
from .sam_fast_attention import (REL_POS_MODES, SAMFastAttention,
                                 SAMFastBlock, augmented_rel_pos_attention,
                                 chunked_rel_pos_attention,
                                 decomposed_rel_pos_bias,
                                 decomposed_rel_pos_terms,
                                 default_rel_pos_mode, enable_fast_attention)
from .sam_mask_decoder import PairedMaskDecoder
from .sam_window_ops import window_partition_padded, window_unpartition_add
from .siglip_tokenizer import SigLIPTokenizer, canonicalize_text
from .tuning import TUNING_MODES, apply_lora, apply_tuning, is_trainable

__all__ = [
    'CLIPTokenizer', 'SAM_ARCHS', 'SAM_CHECKPOINTS', 'SAM_DEFAULTS',
    'build_sam_modules', 'load_sam_checkpoint', 'sam_arch_settings',
    'REL_POS_MODES', 'SAMFastAttention', 'SAMFastBlock',
    'augmented_rel_pos_attention', 'chunked_rel_pos_attention',
    'decomposed_rel_pos_bias', 'decomposed_rel_pos_terms',
    'default_rel_pos_mode', 'enable_fast_attention', 'PairedMaskDecoder',
    'window_partition_padded', 'window_unpartition_add', 'TUNING_MODES',
    'apply_lora', 'apply_tuning', 'is_trainable', 'LoRAConv2d',
    'SigLIPTokenizer', 'canonicalize_text'
]
