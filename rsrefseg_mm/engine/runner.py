"""mmengine ``Runner`` that loads trained checkpoints strictly and within
size limits, and writes them atomically with a hash of their weights."""
import os
import os.path as osp
from typing import Callable, Optional, Union

from mmengine.config import Config, ConfigDict
from mmengine.dist import master_only
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import CheckpointLoader, Runner
from mmseg.registry import RUNNERS

from ..utils.checkpoint_hash import add_state_dict_hash
from ..utils.checkpoint_limits import (DEFAULT_MAX_EXPANSION,
                                       check_max_expansion, checkpoint_limits)
from ..utils.checkpoint_match import (DEFAULT_REVISE_KEYS, RevisePairs,
                                      load_model_weights)


@RUNNERS.register_module()
class RSRefSegRunner(Runner):
    """mmengine's ``Runner`` with strict checkpoint loading and atomic
    checkpoint writes.

    ``tools/train.py`` and ``tools/test.py`` build it, and
    ``runner_type = 'RSRefSegRunner'`` (``configs/_base_/
    default_runtime.py``) selects it for code that builds runners from the
    registry. It overrides four public methods:

    * :meth:`load_checkpoint` (``load_from``; :meth:`resume` calls it) is
      strict unless the config sets ``strict_load = False`` (into the
      segmentor a test-time augmentation model wraps): a file whose
      tensors do not match the model raises
      :class:`~rsrefseg_mm.utils.CheckpointMismatchError` before anything
      is copied (mmengine loads what matches and logs the rest). The file
      is read by mmengine's ``CheckpointLoader``, whose local loader
      importing ``rsrefseg_mm`` replaces with the safe one
      (:mod:`rsrefseg_mm.utils.checkpoint`: ``weights_only=True`` and the
      allow-list of what runners save, URLs refused, the size limits of
      :mod:`rsrefseg_mm.utils.checkpoint_limits` with the config's
      ``max_checkpoint_expansion``, the weights' hash checked).
    * :meth:`from_cfg` reads ``strict_load`` and
      ``max_checkpoint_expansion``.
    * :meth:`call_hook` stores the sha256 of the checkpoint's
      ``state_dict`` in ``meta['state_dict_sha256']`` after the
      ``before_save_checkpoint`` hooks (which may still change the
      checkpoint, e.g. ``EMAHook``) and before it is written.
    * :meth:`save_checkpoint` writes a local checkpoint to a temporary file
      in the same folder, flushes it to disk and renames it into place
      (``os.replace``, atomic on POSIX and Windows): a run killed while
      saving never leaves a truncated file under a checkpoint's name, so
      ``last_checkpoint`` and ``--resume`` only ever see complete files.

    Accepts every argument of mmengine's ``Runner``.
    """

    #: :meth:`load_checkpoint` default (config key ``strict_load``)
    strict_load: bool = True
    #: How many times its size on disk a checkpoint's zip records may
    #: unpack to (config key ``max_checkpoint_expansion``)
    max_checkpoint_expansion: float = DEFAULT_MAX_EXPANSION

    @classmethod
    def from_cfg(cls, cfg: Union[Config, ConfigDict, dict]) -> 'Runner':
        """Build the runner from a config (mmengine's ``from_cfg``).

        Args:
            cfg (Config | dict): The whole config.

        Returns:
            RSRefSegRunner: The runner.

        Raises:
            ValueError: ``max_checkpoint_expansion`` is not a number >= 1.
        """
        expansion = check_max_expansion(
            cfg.get('max_checkpoint_expansion', DEFAULT_MAX_EXPANSION))
        runner = super().from_cfg(cfg)
        runner.strict_load = bool(cfg.get('strict_load', True))
        runner.max_checkpoint_expansion = expansion
        return runner

    def call_hook(self, fn_name: str, **kwargs) -> None:
        """Call every hook's ``fn_name`` (mmengine's ``call_hook``); after
        ``before_save_checkpoint``, store the hash of the checkpoint's
        ``state_dict`` in its ``meta``.

        Args:
            fn_name (str): The hook method, e.g. ``'before_train_epoch'``.
            **kwargs: Passed to the hooks.
        """
        super().call_hook(fn_name, **kwargs)
        if fn_name == 'before_save_checkpoint':
            add_state_dict_hash(kwargs['checkpoint'])

    def load_checkpoint(
            self,
            filename: str,
            map_location: Union[str, Callable] = 'cpu',
            strict: Optional[bool] = None,
            revise_keys: RevisePairs = DEFAULT_REVISE_KEYS) -> dict:
        """Load ``filename`` into the model (mmengine's steps, strict).

        Args:
            filename (str): Local checkpoint path.
            map_location (str | callable): Where tensors go. Defaults to
                ``'cpu'``.
            strict (bool, optional): Refuse a file whose tensors do not
                match the model. Defaults to :attr:`strict_load`.
            revise_keys (Sequence[tuple[str, str]]): ``(pattern,
                replacement)`` for the checkpoint's keys. Defaults to
                stripping ``module.``.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            UnsafeCheckpointError: The file needs globals outside the
                allow-list (nothing of it has run).
            CheckpointLimitError: The file claims more memory than its size
                allows (``max_checkpoint_expansion`` for zip records).
            ChangedCheckpointError: Its weights differ from the hash
                written with them.
            RemoteCheckpointError: ``filename`` is a URL / remote path.
            CheckpointMismatchError: ``strict`` and missing, unexpected or
                differently shaped tensors.
        """
        strict = self.strict_load if strict is None else strict
        with checkpoint_limits(self.max_checkpoint_expansion):
            checkpoint = CheckpointLoader.load_checkpoint(
                filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        if isinstance(model, BaseTTAModel):  # --tta: the segmentor inside
            model = model.module
        load_model_weights(
            model,
            checkpoint,
            filename,
            strict=strict,
            opt_out='strict_load = False in the config',
            revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args,
                        **kwargs) -> None:
        """mmengine's ``save_checkpoint``, atomic for local folders.

        Args:
            out_dir (str): Folder of the checkpoint.
            filename (str): Its file name.
            *args, **kwargs: The other arguments of mmengine's
                ``Runner.save_checkpoint``.
        """
        if '://' in str(out_dir) or kwargs.get('backend_args') or kwargs.get(
                'file_client_args'):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        part = f'.{filename}.{os.getpid()}.part'
        part_path = osp.join(out_dir, part)
        try:
            super().save_checkpoint(out_dir, part, *args, **kwargs)
            with open(part_path, 'rb+') as f:
                os.fsync(f.fileno())
            os.replace(part_path, osp.join(out_dir, filename))
        finally:
            if osp.exists(part_path):
                os.remove(part_path)
