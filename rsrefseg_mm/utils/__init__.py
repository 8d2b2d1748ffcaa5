from rsrefseg_core.progress import track
from .checkpoint import (ChangedCheckpointError, CorruptCheckpointError,
                         RemoteCheckpointError, UnsafeCheckpointError,
                         allow_unsafe_load, check_local_checkpoint,
                         runner_safe_globals, safe_torch_load,
                         unsafe_load_enabled, verify_state_dict_hash)
from .checkpoint_hash import add_state_dict_hash, state_dict_sha256
from .checkpoint_limits import CheckpointLimitError, checkpoint_limits
from .checkpoint_match import CheckpointMismatchError, load_model_weights
from .config import apply_compile_arg, drop_pretrained_checkpoints
from .dist import use_gloo_without_cuda
from .safe_pickle import (PlainDataLimitError, UnsafePickleError,
                          check_plain_data_size, load_plain_pickle,
                          load_plain_pickle_file)

__all__ = [
    'CorruptCheckpointError', 'apply_compile_arg', 'RemoteCheckpointError',
    'safe_torch_load', 'runner_safe_globals', 'UnsafeCheckpointError',
    'check_local_checkpoint', 'allow_unsafe_load', 'unsafe_load_enabled',
    'drop_pretrained_checkpoints', 'use_gloo_without_cuda', 'track',
    'UnsafePickleError', 'PlainDataLimitError', 'check_plain_data_size',
    'load_plain_pickle', 'load_plain_pickle_file', 'CheckpointMismatchError',
    'load_model_weights', 'ChangedCheckpointError', 'CheckpointLimitError',
    'checkpoint_limits', 'add_state_dict_hash', 'state_dict_sha256',
    'verify_state_dict_hash'
]
