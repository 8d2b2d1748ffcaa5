from .sam2_builder import (SAM2_ARCHS, SAM2_BACKBONE_STRIDE, SAM2_CONFIGS,
                           SAM2_DEFAULTS, build_sam2_modules,
                           sam2_arch_settings)
from .sam2_checkpoint import (HF_SAM2_REPOS, SAM2_CHECKPOINTS, SAM2_VIDEO_KEYS,
                              convert_sam2_state_dict, is_sam2_video_key,
                              load_sam2_checkpoint, read_sam2_checkpoint,
                              resolve_sam2_file)

__all__ = [
    'SAM2_ARCHS', 'SAM2_BACKBONE_STRIDE', 'SAM2_CONFIGS', 'SAM2_DEFAULTS',
    'build_sam2_modules', 'sam2_arch_settings', 'HF_SAM2_REPOS',
    'SAM2_CHECKPOINTS', 'SAM2_VIDEO_KEYS', 'convert_sam2_state_dict',
    'is_sam2_video_key', 'load_sam2_checkpoint', 'read_sam2_checkpoint',
    'resolve_sam2_file'
]
