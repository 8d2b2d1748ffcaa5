"""Config, model and input construction for ``benchmark.py``."""
import copy
from typing import Optional, Sequence

import torch

TEXTS = [
    'the large white storage tank at the lower left of the image',
    'a vehicle',
    'the baseball field next to the two tennis courts on the right',
    'the harbor in the middle',
]


def load_config(config: str, cfg_options: Optional[dict] = None):
    """Read a config, apply ``--cfg-options`` and clear pretrained paths."""
    from mmengine.config import Config

    from rsrefseg_mm.utils import drop_pretrained_checkpoints
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    drop_pretrained_checkpoints(cfg.model)
    return cfg


def build_model(cfg,
                device: str,
                checkpoint: Optional[str] = None,
                with_cp: Optional[bool] = None) -> torch.nn.Module:
    """Build ``cfg.model`` (SyncBN reverted to BN) on ``device``.

    Args:
        cfg (Config): From :func:`load_config`.
        device (str): ``'cpu'`` or ``'cuda'``.
        checkpoint (str, optional): Runner checkpoint to load.
        with_cp (bool, optional): Override ``decode_head.with_cp``.

    Returns:
        nn.Module: The segmentor in eval mode.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    if with_cp is not None:
        model_cfg.decode_head.with_cp = with_cp
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model = revert_sync_batchnorm(model)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        from rsrefseg_mm.utils import checkpoint_loading
        with checkpoint_loading(checkpoint):
            load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def input_size(cfg, image_size: Optional[Sequence[int]]) -> tuple:
    """(H, W) from ``--image-size`` or the config's data preprocessor."""
    if image_size:
        return tuple(image_size)
    size = cfg.model.get('data_preprocessor', {}).get('size') or \
        cfg.get('crop_size')
    if size is None:
        raise ValueError('give --image-size: the config has no '
                         'data_preprocessor.size / crop_size')
    return tuple(size)


def make_samples(batch_size: int,
                 size: tuple,
                 device: str,
                 with_gt: bool = False) -> list:
    """Data samples with referring expressions (and a box mask as gt)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    samples = []
    for i in range(batch_size):
        ds = SegDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                pad_shape=(h, w),
                text=TEXTS[i % len(TEXTS)]))
        if with_gt:
            gt = torch.zeros(1, h, w, dtype=torch.long, device=device)
            gt[:, h // 4:h // 2, w // 3:w // 2] = 1
            ds.gt_sem_seg = PixelData(data=gt)
        samples.append(ds)
    return samples
