"""Hook that compiles the model's hot paths before training or testing."""
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ..compiler import compile_hot_paths


@HOOKS.register_module()
class CompileHotPathsHook(Hook):
    """``torch.compile`` the hot paths of the model, once per run.

    Compiles the sub-modules / methods named by
    :func:`~rsrefseg_mm.engine.compile_hot_paths` (by default those the
    model's parts declare in ``compile_targets``: the encoder towers and the
    SAM image encoder) before the first train, val or test loop, after the
    runner has loaded or resumed its checkpoint and wrapped the model.
    mmengine's top-level ``compile`` key instead compiles the whole
    ``train_step``, and only for training. In a config::

        custom_hooks = [
            dict(type='CompileHotPathsHook',
                 mode='max-autotune-no-cudagraphs')
        ]

    ``tools/train.py`` / ``tools/test.py --compile [MODE]`` add it (or set
    the mode of the one in the config).

    Args:
        targets (Sequence[str], optional): Dotted names relative to the
            (unwrapped) model; default: the declared hot paths.
        **compile_kwargs: ``torch.compile`` arguments (``mode``,
            ``backend``, ``dynamic``, ``fullgraph``, ``options``), e.g.
            ``mode='reduce-overhead'`` for CUDA graphs at inference.
    """

    priority = 'VERY_LOW'

    def __init__(self,
                 targets: Optional[Sequence[str]] = None,
                 **compile_kwargs) -> None:
        self.targets = None if targets is None else list(targets)
        self.compile_kwargs = compile_kwargs
        self.compiled_targets: Optional[List[str]] = None

    def _compile(self, runner, step: str) -> None:
        if self.compiled_targets is not None:
            return
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        self.compiled_targets = compile_hot_paths(model, self.targets,
                                                  **self.compile_kwargs)
        runner.logger.info(
            f'torch.compile({self.compile_kwargs}) of '
            f'{self.compiled_targets} (before {step}); the first '
            'iterations compile and are slow')

    def before_train(self, runner) -> None:
        """Compile before the first training iteration."""
        self._compile(runner, 'train_step')

    def before_val(self, runner) -> None:
        """Compile before validation (no-op when already compiled)."""
        self._compile(runner, 'val_step')

    def before_test(self, runner) -> None:
        """Compile before testing."""
        self._compile(runner, 'test_step')
