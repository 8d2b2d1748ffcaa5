"""Helpers shared by the test modules (``pytest.ini`` puts ``tests/`` on
``sys.path``: ``from helpers import ...``)."""
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

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
