"""rsrefseg-mm: RSRefSeg (referring remote-sensing segmentation with foundation
models, https://arxiv.org/abs/2501.06809) as an MMSegmentation 1.x plugin.

Importing the package checks the installed torch and OpenMMLab versions and
registers every component into MMSegmentation's registries. It also makes
mmengine's ``CheckpointLoader`` load local files through the safe loader
(``weights_only=True`` and an allow-list) and refuse URLs / remote stores
(see :mod:`rsrefseg_mm.utils.checkpoint`); nothing else of mmengine or
torch changes.
"""
from typing import Optional

import mmcv
import mmengine
import mmseg
import torch
from mmengine.utils import digit_version

from .version import __version__

# torch >= 2.6: torch.load defaults to weights_only=True, so the loads of
# other code stay safe too (rsrefseg_mm's pass weights_only explicitly).
TORCH_MIN, TORCH_MAX = '2.6.0', None
MMCV_MIN, MMCV_MAX = '2.0.0rc4', '2.2.0'
MMENGINE_MIN, MMENGINE_MAX = '0.10.0', '0.11.0'
MMSEG_MIN, MMSEG_MAX = '1.2.2', '1.3.0'


def check_version(name: str, version: str, minimum: str,
                  maximum: Optional[str]) -> None:
    """Raise a clear error when ``minimum <= version < maximum`` fails.

    Args:
        name (str): Package name, for the message.
        version (str): The installed version.
        minimum (str): Lowest supported version.
        maximum (str, optional): First unsupported version; None for no
            upper bound.
    """
    if digit_version(minimum) <= digit_version(version) and (
            maximum is None
            or digit_version(version) < digit_version(maximum)):
        return
    bounds = f'{minimum} <= {name}' + (f' < {maximum}' if maximum else '')
    raise AssertionError(
        f'rsrefseg_mm {__version__} needs {bounds}, but {name}=={version} is '
        'installed. Run `make install` (it creates .venv with a tested '
        'torch and the OpenMMLab versions pinned in '
        'requirements/mminstall.txt).')


check_version('torch', torch.__version__, TORCH_MIN, TORCH_MAX)
check_version('mmcv', mmcv.__version__, MMCV_MIN, MMCV_MAX)
check_version('mmengine', mmengine.__version__, MMENGINE_MIN, MMENGINE_MAX)
check_version('mmsegmentation', mmseg.__version__, MMSEG_MIN, MMSEG_MAX)

from . import engine  # noqa: E402,F401  (runner, hooks, optim wrappers)
from . import utils  # noqa: E402,F401
from . import datasets, evaluation, models, visualization  # noqa: E402,F401

__all__ = ['__version__', 'check_version']
