"""Distributed-launch helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import atexit
import os
import sys
from datetime import timedelta

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
    ``device_ids=None`` (CPU DDP). The group created here is left through
    a bounded barrier and destroyed at interpreter exit: without that, a
    finished rank could abort with "terminate called without an active
    exception" (gloo; seen in 2-process ``dist_test.sh`` runs). The switches are
    logged; nothing changes when CUDA is available.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    backend = (cfg.get('env_cfg') or {}).get('dist_cfg', {}).get(
        'backend', 'nccl')
    if backend == 'nccl':
        backend = 'gloo'
        # merge: also creates env_cfg / dist_cfg when the config has none
        cfg.merge_from_dict({'env_cfg.dist_cfg.backend': backend})
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
            backend=backend,
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
        atexit.register(_destroy_process_group)
        print_log(
            f'initialised the {backend} process group on CPU '
            f'(rank {torch_dist.get_rank()}/{torch_dist.get_world_size()})',
            logger='current')


def _destroy_process_group(timeout_s: float = 60) -> None:
    """Leave the gloo group together with the other ranks, then destroy it.

    Without the barrier a rank that finishes first closes its connections
    while a peer's gloo threads still use them (the peer then aborts). The
    barrier is bounded: after a failure elsewhere a peer may never arrive.
    """
    if not torch_dist.is_initialized():
        return
    try:
        torch_dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
    except RuntimeError as e:
        print(f'rank {torch_dist.get_rank()}: not every rank reached the '
              f'exit barrier ({e}); destroying the process group anyway',
              file=sys.stderr)
    torch_dist.destroy_process_group()
