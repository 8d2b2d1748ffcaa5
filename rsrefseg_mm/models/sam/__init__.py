from .rel_pos_attention import fold_rel_pos_into_qk
from .sam_builder import (SAM_ARCHS, SAM_CHECKPOINTS, SAM_DEFAULTS,
                          SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_sam_modules,
                          load_sam_checkpoint, sam_arch_settings)
from .sam_checkpoint import (HF_SAM_DECODER_NORM_EPS, HF_SAM_REPOS,
                             SAM_DECODER_NORM_EPS, convert_hf_sam_state_dict,
                             hf_sam_key_map, is_hf_sam_state_dict,
                             read_sam_checkpoint, resolve_decoder_norm_eps)
from .sam_fast_attention import (REL_POS_MODES, SAMFastAttention, SAMFastBlock,
                                 augmented_rel_pos_attention,
                                 check_rel_pos_mode, chunked_rel_pos_attention,
                                 decomposed_rel_pos_bias,
                                 decomposed_rel_pos_terms,
                                 default_rel_pos_mode, enable_fast_attention)
from .sam_mask_decoder import PairedMaskDecoder
from .sam_window_ops import window_partition_padded, window_unpartition_add

__all__ = [
    'SAM_ARCHS', 'SAM_CHECKPOINTS', 'SAM_DEFAULTS', 'SAM_PIXEL_MEAN',
    'SAM_PIXEL_STD', 'build_sam_modules', 'load_sam_checkpoint',
    'sam_arch_settings', 'REL_POS_MODES', 'SAMFastAttention', 'SAMFastBlock',
    'augmented_rel_pos_attention', 'check_rel_pos_mode',
    'chunked_rel_pos_attention', 'decomposed_rel_pos_bias',
    'decomposed_rel_pos_terms', 'default_rel_pos_mode',
    'enable_fast_attention', 'fold_rel_pos_into_qk', 'PairedMaskDecoder',
    'window_partition_padded', 'window_unpartition_add',
    'HF_SAM_DECODER_NORM_EPS', 'HF_SAM_REPOS', 'SAM_DECODER_NORM_EPS',
    'convert_hf_sam_state_dict', 'hf_sam_key_map', 'is_hf_sam_state_dict',
    'read_sam_checkpoint', 'resolve_decoder_norm_eps'
]
