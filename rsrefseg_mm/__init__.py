"""rsrefseg-mm: RSRefSeg (referring remote-sensing segmentation with foundation
models, https://arxiv.org/abs/2501.06809) as an MMSegmentation 1.x plugin.

Importing the package checks the installed OpenMMLab versions and registers
every component into MMSegmentation's registries.
"""
import mmcv
import mmengine
import mmseg
from mmengine.utils import digit_version

from .version import __version__

MMCV_MIN, MMCV_MAX = '2.0.0rc4', '2.2.0'
MMENGINE_MIN, MMENGINE_MAX = '0.10.0', '0.11.0'
MMSEG_MIN, MMSEG_MAX = '1.2.2', '1.3.0'


def check_version(name: str, version: str, minimum: str, maximum: str) -> None:
    """Raise a clear error when ``minimum <= version < maximum`` fails."""
    if not digit_version(minimum) <= digit_version(version) < digit_version(
            maximum):
        raise AssertionError(
            f'rsrefseg_mm {__version__} needs {minimum} <= {name} < {maximum}, '
            f'but {name}=={version} is installed. Run `make install` (it '
            f'creates .venv with the pinned versions) or install the pins in '
            f'requirements/mminstall.txt.')


check_version('mmcv', mmcv.__version__, MMCV_MIN, MMCV_MAX)
check_version('mmengine', mmengine.__version__, MMENGINE_MIN, MMENGINE_MAX)
check_version('mmsegmentation', mmseg.__version__, MMSEG_MIN, MMSEG_MAX)

from . import utils  # noqa: E402,F401  (checkpoint loading on torch>=2.6)
from . import datasets, evaluation, models, visualization  # noqa: E402,F401
from . import engine  # noqa: E402,F401  (hooks, optim wrappers)

__all__ = ['__version__', 'check_version']
