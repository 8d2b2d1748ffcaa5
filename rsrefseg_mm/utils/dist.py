"""Distributed launch on CPU-only machines (tools/train.py, tools/test.py)."""
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

    Without CUDA, ``env_cfg.dist_cfg.backend`` nccl becomes gloo, and the
    model wrapper gets ``device_ids=None`` (mmengine's default DDP wrapper
    passes ``device_ids=[LOCAL_RANK]``, which only GPUs accept). The
    backend switch is logged; nothing changes when CUDA is available or
    without a launcher. A FlexibleRunner's ``FSDPStrategy`` shards on the
    CPU (``model_wrapper.device_id='cpu'``).

    For the ``pytorch`` launcher (torchrun, ``tools/dist_*.sh``) the gloo
    process group is created here, from torchrun's environment, because
    mmengine 0.10.7's ``init_dist('pytorch')`` calls
    ``torch.cuda.set_device(LOCAL_RANK)`` before ``init_process_group``,
    and on a machine without an NVIDIA driver that call raises ("Found no
    NVIDIA driver on your system") for any backend. The runner then finds
    the group initialised and skips its own ``init_dist``. The group is
    left through a bounded barrier and destroyed at interpreter exit:
    otherwise a rank that finishes first can abort a peer whose gloo
    threads still use the connections ("terminate called without an active
    exception").

    Args:
        cfg (Config): The whole config (``launcher`` set), modified in
            place.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    backend = (cfg.get('env_cfg') or {}).get('dist_cfg',
                                             {}).get('backend', 'nccl')
    if backend == 'nccl':
        backend = 'gloo'
        # merge: also creates env_cfg / dist_cfg when the config has none
        cfg.merge_from_dict({'env_cfg.dist_cfg.backend': backend})
        print_log(
            'CUDA is not available: distributed backend set to gloo.',
            logger='current')
    _fsdp_on_cpu(cfg)
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


def _fsdp_on_cpu(cfg: Config) -> None:
    """Shard on the CPU with a FlexibleRunner's ``FSDPStrategy``.

    mmengine's ``FSDPStrategy`` passes ``device_id=LOCAL_RANK`` to FSDP,
    which takes an int for a CUDA device ("Found no NVIDIA driver on your
    system"); without ``device_id`` FSDP refuses to run without an
    accelerator. ``device_id='cpu'`` (the strategy's ``model_wrapper``, a
    value the config sets wins) shards and computes on the CPU over gloo.

    Args:
        cfg (Config): The whole config, modified in place.
    """
    strategy = cfg.get('strategy') or {}
    if cfg.get('runner_type') != 'FlexibleRunner' or \
            strategy.get('type') != 'FSDPStrategy':
        return
    wrapper = strategy.get('model_wrapper') or dict(type='ScalarSafeFSDP')
    wrapper.setdefault('device_id', 'cpu')
    cfg.merge_from_dict({'strategy.model_wrapper': wrapper})


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
        print(
            f'rank {torch_dist.get_rank()}: not every rank reached the '
            f'exit barrier ({e}); destroying the process group anyway',
            file=sys.stderr)
    torch_dist.destroy_process_group()
