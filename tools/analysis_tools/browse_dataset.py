"""Browse a referring dataset: mask overlay + expression caption per sample.

Runs a config's data pipeline and writes one image per sample with the
ground-truth target tinted and the referring expression written above it::

    python tools/analysis_tools/browse_dataset.py \
        configs/_base_/datasets/synthetic_referring.py \
        --output-dir work_dirs/browse --split train --num 20

Files are named ``<split>_<index>_ref<ref_id>_sent<sent_id>.jpg``.
"""
import argparse
import os
import os.path as osp
import sys
import textwrap

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


def render_sample(img: np.ndarray,
                  mask: np.ndarray,
                  text: str,
                  color=(60, 60, 255),
                  alpha: float = 0.5,
                  ignore_index: int = 255,
                  width_chars: int = 48) -> np.ndarray:
    """Overlay ``mask`` on ``img`` and write ``text`` above it.

    Args:
        img (np.ndarray): (H, W, 3) BGR uint8 image.
        mask (np.ndarray): (h, w) mask, 1 = target (resized to the image
            with nearest interpolation when sizes differ), ``ignore_index``
            drawn grey.
        text (str): Caption.
        color (tuple): BGR colour of the target tint.
        alpha (float): Tint opacity.
        ignore_index (int): Ignored label.
        width_chars (int): Caption wrap width in characters.

    Returns:
        np.ndarray: (H + caption, W, 3) BGR uint8 image.
    """
    img = np.ascontiguousarray(img).astype(np.uint8)
    h, w = img.shape[:2]
    if mask.shape != (h, w):
        mask = cv2.resize(mask.astype(np.uint8), (w, h),
                          interpolation=cv2.INTER_NEAREST)
    out = img.astype(np.float32)
    fg = mask == 1
    out[fg] = (1 - alpha) * out[fg] + alpha * np.array(color, np.float32)
    out[mask == ignore_index] = 0.5 * out[mask == ignore_index] + 64
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, 1)
    scale = max(0.35, min(1.0, w / 640))
    wrap = max(10, int(width_chars * (w / 640) / scale))
    lines = textwrap.wrap(text, wrap) or ['']
    line_h = int(22 * scale) + 4
    banner = np.full((line_h * len(lines) + 6, w, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(banner, line, (4, line_h * (i + 1)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([banner, out], axis=0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Browse a referring dataset')
    parser.add_argument('config', help='config file')
    parser.add_argument('--output-dir', required=True, help='output folder')
    parser.add_argument('--split', default='train',
                        choices=['train', 'val', 'test'])
    parser.add_argument('--num', type=int, default=20,
                        help='number of samples')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
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
    for idx in range(n):
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
