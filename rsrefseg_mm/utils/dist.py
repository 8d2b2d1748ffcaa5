"""Distributed-launch helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log


def use_gloo_without_cuda(cfg: Config) -> None:
    """Let multi-process runs work on CPU-only machines.

    NCCL needs GPUs, and mmengine 0.10.7's ``init_dist('pytorch')`` calls
    ``torch.cuda.set_device`` unconditionally (it raises without a driver).
    Without CUDA we therefore switch ``env_cfg.dist_cfg.backend`` to gloo
    and, for the ``pytorch`` launcher (torchrun / ``tools/dist_*.sh``),
    create the gloo process group ourselves from torchrun's environment;
    the runner then finds it initialised and skips its own ``init_dist``.
    The runner would also wrap the model in DDP with
    ``device_ids=[LOCAL_RANK]`` (GPU only), so the model wrapper gets
    ``device_ids=None`` (CPU DDP). The switches are logged; nothing changes
    when CUDA is available.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
        print_log('CUDA is not available: distributed backend set to gloo.',
                  logger='current')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if launcher == 'pytorch' and not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend=dist_cfg['backend'],
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
        print_log(
            f'initialised the {dist_cfg["backend"]} process group on CPU '
            f'(rank {torch_dist.get_rank()}/{torch_dist.get_world_size()})',
            logger='current')
