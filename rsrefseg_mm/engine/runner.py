"""mmengine ``Runner`` that loads checkpoints through the safe loader and
writes them atomically."""
import os
import os.path as osp
from typing import Optional, Union

from mmengine.config import Config, ConfigDict
from mmengine.dist import master_only
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ..utils.checkpoint import checkpoint_loading
from ..utils.checkpoint_match import checkpoint_mismatch_errors


@RUNNERS.register_module()
class RSRefSegRunner(Runner):
    """mmengine's ``Runner`` whose checkpoint loads use the allow-list.

    ``tools/train.py`` and ``tools/test.py`` build it, and
    ``runner_type = 'RSRefSegRunner'`` (``configs/_base_/
    default_runtime.py``) selects it for code that builds runners from the
    registry. It overrides three public methods:

    * :meth:`load_checkpoint` (``load_from``; :meth:`resume` calls it) is
      strict unless the config sets ``strict_load = False``: a file whose
      tensors do not match the model raises
      :class:`~rsrefseg_mm.utils.CheckpointMismatchError` (mmengine loads
      what matches and logs the rest). It runs mmengine's loader inside
      :func:`~rsrefseg_mm.utils.checkpoint_loading`. mmengine 0.10 calls
      ``torch.load`` without ``weights_only``; since torch 2.6 that means
      ``weights_only=True``, which refuses the message hub and numpy objects
      of mmengine's own checkpoints. The runner passes exactly those
      globals for this one load, names the file when it refuses one, and
      leaves mmengine's ``CheckpointLoader`` untouched for other code.
    * :meth:`from_cfg` reads ``strict_load`` and refuses the top-level
      ``compile`` key. Configs written for earlier versions of this runner
      used it to compile the model's hot paths; mmengine reads it as
      "compile the whole ``train_step``". The error names the hook that
      compiles the hot paths now
      (:class:`~rsrefseg_mm.engine.CompileHotPathsHook`).

    * :meth:`save_checkpoint` writes a local checkpoint to a temporary file
      in the same folder, flushes it to disk and renames it into place
      (``os.replace``, atomic on POSIX and Windows): a run killed while
      saving never leaves a truncated file under a checkpoint's name, so
      ``last_checkpoint`` and ``--resume`` only ever see complete files.

    Accepts every argument of mmengine's ``Runner``.
    """

    #: :meth:`load_checkpoint` default (config key ``strict_load``)
    strict_load: bool = True

    @classmethod
    def from_cfg(cls, cfg: Union[Config, ConfigDict, dict]) -> 'Runner':
        """Build the runner from a config (mmengine's ``from_cfg``).

        Args:
            cfg (Config | dict): The whole config.

        Returns:
            RSRefSegRunner: The runner.

        Raises:
            ValueError: The config sets the top-level ``compile`` key.
        """
        if cfg.get('compile', None) not in (None, False):
            raise ValueError(
                f'compile={cfg["compile"]!r}: the top-level `compile` key '
                'is not read by RSRefSegRunner (mmengine would compile the '
                'whole train_step, whose tokenizer, backward and optimizer '
                'step break the graph). Compile the towers and the SAM '
                'encoder with custom_hooks = [dict(type='
                "'CompileHotPathsHook', mode=..., backend=...)] or with "
                'tools/train.py / tools/test.py --compile [MODE].')
        runner = super().from_cfg(cfg)
        runner.strict_load = bool(cfg.get('strict_load', True))
        return runner

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: Optional[bool] = None,
                        **kwargs) -> dict:
        """Load ``filename`` into the model, through the allow-list.

        Args:
            filename (str): Local path (or any scheme mmengine's
                ``CheckpointLoader`` reads).
            map_location (str | callable): Where tensors go. Defaults to
                ``'cpu'``.
            strict (bool, optional): Refuse a file whose tensors do not
                match the model. Defaults to :attr:`strict_load`.
            **kwargs: ``revise_keys`` of mmengine's
                ``Runner.load_checkpoint``.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            UnsafeCheckpointError: The file needs globals outside the
                allow-list (nothing of it has run).
            CheckpointMismatchError: ``strict`` and missing, unexpected or
                differently shaped tensors.
        """
        strict = self.strict_load if strict is None else strict
        with checkpoint_loading(filename), checkpoint_mismatch_errors(
                filename, 'strict_load = False in the config'):
            return super().load_checkpoint(
                filename, map_location=map_location, strict=strict, **kwargs)

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
