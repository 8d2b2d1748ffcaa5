"""Helpers shared by the test modules (``pytest.ini`` puts ``tests/`` on
``sys.path``: ``from helpers import ...``)."""
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

#: Repository root.
REPO = Path(__file__).resolve().parents[1]
#: The tiny demo config (its schedule part of the name may change).
TINY_CONFIG = str(
    sorted((REPO / 'configs' / 'rsrefseg').glob('rsrefseg-tiny_*.py'))[0])


class RunsACommand:
    """Unpickling this object runs ``touch <marker>`` through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def crafted_checkpoint(
        folder: Path,
        state_dict: Optional[Dict[str, torch.Tensor]] = None
) -> Tuple[str, Path]:
    """A ``.pth`` whose pickle would run a command when fully unpickled.

    Args:
        folder (Path): Where the file (``crafted.pth``) and the marker the
            command would create (``command_ran``) go.
        state_dict (dict, optional): Tensors stored beside the payload.

    Returns:
        tuple[str, Path]: The checkpoint path and the marker path (which
        exists only if the command ran).
    """
    marker = Path(folder) / 'command_ran'
    path = Path(folder) / 'crafted.pth'
    torch.save(
        dict(
            state_dict=state_dict or {'w': torch.zeros(1)},
            meta=dict(note=RunsACommand(marker))), path)
    return str(path), marker


def load_script(relpath: str) -> ModuleType:
    """Import a script of the repository (e.g. ``tools/train.py``) as a
    module, to call its ``main`` / ``parse_args`` in-process.

    Args:
        relpath (str): Path relative to the repository root.

    Returns:
        module: The executed script module (``__name__`` is not
        ``'__main__'``, so ``main()`` does not run on import).
    """
    path = REPO / relpath
    name = 'rsrefseg_script_' + path.stem
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def referring_samples(batch_size: int = 2,
                      size: int = 128,
                      box: Tuple[int, int, int, int] = (20, 60, 30, 70)
                      ) -> List[SegDataSample]:
    """Data samples with an expression and a box-shaped target.

    Args:
        batch_size (int): Number of samples B.
        size (int): Image side (``img_shape`` = ``ori_shape``).
        box (tuple): Target rows ``y0:y1`` and columns ``x0:x1`` as
            ``(y0, y1, x0, x1)``.

    Returns:
        list[SegDataSample]: ``gt_sem_seg`` (1, size, size) int64 and
        ``text`` ``'the <i>th red roof'`` in the metainfo.
    """
    y0, y1, x0, x1 = box
    samples = []
    for i in range(batch_size):
        gt = torch.zeros(1, size, size, dtype=torch.long)
        gt[:, y0:y1, x0:x1] = 1
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                text=f'the {i}th red roof'))
        sample.gt_sem_seg = PixelData(data=gt)
        samples.append(sample)
    return samples


def referring_batch(batch_size: int = 2, size: int = 128) -> dict:
    """A ``train_step`` batch: uint8 (3, size, size) images + samples."""
    torch.manual_seed(1)
    inputs = [
        torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        for _ in range(batch_size)
    ]
    return dict(
        inputs=inputs, data_samples=referring_samples(batch_size, size))


def tiny_rsrefseg(**model_overrides) -> nn.Module:
    """The tiny demo model (``TINY_CONFIG``), seeded, in train mode.

    Args:
        **model_overrides: Merged into the config's ``model`` dict.
    """
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.update(model_overrides)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).train()
