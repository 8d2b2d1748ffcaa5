"""Checkpoint loading for mmengine 0.10.x on torch >= 2.6.

mmengine 0.10.7 loads local checkpoints with ``torch.load(filename,
map_location=...)``. Since torch 2.6 that defaults to ``weights_only=True``,
which rejects the non-tensor objects the runner stores in its checkpoints
(message hub history buffers, numpy scalars, the config text), so
``load_from``, ``tools/test.py CKPT`` and ``--resume`` fail on the checkpoints
our own runner saved.

We re-register mmengine's loader for local paths (scheme prefix ``''``) with
an explicit ``weights_only=False``: the same behaviour mmengine had with
torch < 2.6. Only load checkpoint files you trust (pickle can run code), as
with any mmengine checkpoint.
"""
import os.path as osp
from typing import Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location: Optional[str] = None):
    """Load a local checkpoint with ``torch.load(weights_only=False)``.

    Args:
        filename (str): Path of the checkpoint (``~`` is expanded).
        map_location (str, optional): Same as :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)
