"""Browse a referring dataset: mask overlay + expression caption per sample.

Runs a config's data pipeline and writes one image per sample with the
ground-truth target drawn (translucent fill + contour) and the referring
expression (any script) written above it; a progress bar (rate, ETA) is
drawn on stderr when it is a terminal::

    python tools/analysis_tools/browse_dataset.py \
        configs/_base_/datasets/synthetic_referring.py \
        --output-dir work_dirs/browse --split train --num 20

Files are named ``<split>_<index>_ref<ref_id>_sent<sent_id>.jpg``.
"""
import argparse
import os
import os.path as osp
import sys

import cv2
import numpy as np
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

try:
    import rsrefseg_mm  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
    import rsrefseg_mm  # noqa: F401

from mmseg.registry import DATASETS  # noqa: E402

from rsrefseg_core.visualization.overlays import FILL_ALPHA  # noqa: E402
from rsrefseg_core.visualization.overlays import (GT_COLOR, display_scale,
                                                  enlarge)
from rsrefseg_mm.utils import track  # noqa: E402
from rsrefseg_mm.visualization import add_caption  # noqa: E402
from rsrefseg_mm.visualization import draw_mask_overlay


def render_sample(img: np.ndarray,
                  mask: np.ndarray,
                  text: str,
                  alpha: float = FILL_ALPHA,
                  ignore_index: int = 255) -> np.ndarray:
    """Draw ``mask`` over ``img`` (fill + contour), ``text`` above it.

    Args:
        img (np.ndarray): (H, W, 3) BGR uint8 image.
        mask (np.ndarray): (h, w) mask, 1 = target (resized to the image
            with nearest interpolation when sizes differ), ``ignore_index``
            drawn dimmed.
        text (str): Caption (any script).
        alpha (float): Fill opacity.
        ignore_index (int): Ignored label.

    Returns:
        np.ndarray: (H' + caption, W', 3) BGR uint8 image; images narrower
        than 256 px are enlarged by an integer factor.
    """
    rgb = np.ascontiguousarray(img[..., ::-1]).astype(np.uint8)
    if mask.shape != rgb.shape[:2]:
        mask = cv2.resize(
            mask.astype(np.uint8),
            rgb.shape[1::-1],
            interpolation=cv2.INTER_NEAREST)
    scale = display_scale(rgb.shape[1])
    out = draw_mask_overlay(
        enlarge(rgb, scale), enlarge(mask, scale), GT_COLOR, alpha,
        ignore_index)
    return np.ascontiguousarray(add_caption(out, text)[..., ::-1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Browse a referring dataset')
    parser.add_argument('config', help='config file')
    parser.add_argument('--output-dir', required=True, help='output folder')
    parser.add_argument(
        '--split', default='train', choices=['train', 'val', 'test'])
    parser.add_argument(
        '--num', type=int, default=20, help='number of samples')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings, e.g. train_dataloader.dataset.num_samples=5')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    loader = cfg.get(f'{args.split}_dataloader')
    if loader is None:
        raise KeyError(f'{args.config} has no {args.split}_dataloader')
    dataset = DATASETS.build(loader.dataset)
    os.makedirs(args.output_dir, exist_ok=True)
    n = min(args.num, len(dataset))
    for idx in track(range(n), f'browsing {args.split}', unit='sample'):
        out = dataset[idx]
        sample = out['data_samples']
        img = out['inputs'].permute(1, 2, 0).numpy()  # BGR, as loaded
        mask = sample.gt_sem_seg.data[0].numpy() if 'gt_sem_seg' in sample \
            else np.zeros(img.shape[:2], np.uint8)
        meta = sample.metainfo
        vis = render_sample(img, mask, meta.get('text', ''))
        name = f'{args.split}_{idx:05d}_ref{meta.get("ref_id")}' \
               f'_sent{meta.get("sent_id")}.jpg'
        cv2.imwrite(osp.join(args.output_dir, name), vis)
    print(f'wrote {n} images to {args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
