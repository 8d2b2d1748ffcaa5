"""mmengine ``Runner`` whose ``compile`` key compiles the model's towers.

:class:`RSRefSegRunner` is what ``tools/train.py`` and ``tools/test.py``
build; ``runner_type = 'RSRefSegRunner'`` (``configs/_base_/
default_runtime.py``) selects it for entry points that build runners from
the registry (``RUNNERS.build(cfg)``). With a top-level ``compile`` key
(``True`` or a dict of ``torch.compile`` arguments, optionally with
``targets``), e.g.::

    compile = dict(mode='max-autotune-no-cudagraphs')  # training
    compile = dict(mode='reduce-overhead')  # inference with CUDA graphs

it compiles the hot paths of :func:`~rsrefseg_mm.engine.compile_hot_paths`
once, before the first train, val or test loop (mmengine itself compiles
the whole ``train_step`` and only when training).
"""
from typing import List, Optional

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from .compiler import compile_hot_paths


@RUNNERS.register_module()
class RSRefSegRunner(Runner):
    """``Runner`` with the ``compile`` key applied to the model's towers.

    Accepts every argument of mmengine's ``Runner``; see the module
    docstring for ``compile``.
    """

    _compiled_targets: Optional[List[str]] = None

    def _maybe_compile(self, target: str) -> None:
        """Compile the model's hot paths when ``cfg.compile`` asks for it.

        Args:
            target (str): The loop about to run (``'train_step'``,
                ``'val_step'``, ``'test_step'``); the same hot paths serve
                all of them, so they are compiled once.
        """
        compile_cfg = self.cfg.get('compile', None)
        if compile_cfg is None or compile_cfg is False:
            return
        if self._compiled_targets is not None:
            return
        if compile_cfg is True:
            compile_cfg = dict()
        if not isinstance(compile_cfg, dict):
            raise TypeError('`compile` must be a bool or a dict of '
                            f'torch.compile arguments, got {compile_cfg!r}')
        kwargs = dict(compile_cfg)
        targets = kwargs.pop('targets', None)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        self._compiled_targets = compile_hot_paths(model, targets, **kwargs)
        self.logger.info(f'torch.compile({kwargs}) of '
                         f'{self._compiled_targets} (before {target}); the '
                         'first iterations compile and are slow')

    def val(self) -> dict:
        """Validate, compiled when ``cfg.compile`` is set."""
        self._maybe_compile('val_step')
        return super().val()

    def test(self) -> dict:
        """Test, compiled when ``cfg.compile`` is set."""
        self._maybe_compile('test_step')
        return super().test()
