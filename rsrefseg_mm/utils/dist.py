"""Distributed-launch helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import torch
from mmengine.config import Config
from mmengine.logging import print_log


def use_gloo_without_cuda(cfg: Config) -> None:
    """Switch ``env_cfg.dist_cfg.backend`` to ``gloo`` when CUDA is absent.

    NCCL needs GPUs; on CPU-only machines multi-process runs
    (``tools/dist_train.sh CONFIG 2``) use gloo. The switch is logged.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
        print_log('CUDA is not available: distributed backend set to gloo.',
                  logger='current')
