"""Contact sheet of the first held-out pairs of a split: for each, the image
with the ground truth and with the prediction, captioned with the
expression, the IoU and (for a model with a presence output) the presence
probability. The pairs are the split's first ``--num``, in order, not chosen
by score.

Example:
    python demo/contact_sheet.py CONFIG CHECKPOINT --out sheet.png \\
        --cfg-options test_dataloader.dataset.no_target_ratio=0.25
"""
import argparse
import os
import os.path as osp
import sys
from typing import List

import cv2
import numpy as np
from mmengine.config import DictAction
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from rsrefseg_core.visualization import add_caption, label_panel
from rsrefseg_core.visualization.overlays import (GT_COLOR, PRED_COLOR,
                                                  display_scale,
                                                  draw_mask_overlay, enlarge,
                                                  mask_iou)
from rsrefseg_mm.apis import ReferringPredictor, init_referring_model

#: Transforms of the test pipeline that read the image and the ground truth.
LOADERS = ('LoadReferringImageFromFile', 'LoadImageFromFile',
           'LoadReferringAnnotations')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--num', type=int, default=8, help='pairs shown')
    parser.add_argument('--columns', type=int, default=4)
    parser.add_argument(
        '--split',
        default='test',
        choices=('val', 'test'),
        help='dataloader whose dataset is shown')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. '
        'test_dataloader.dataset.no_target_ratio=0.25')
    return parser.parse_args(argv)


def caption(text: str, iou: float, gt_empty: bool, pred_empty: bool,
            presence) -> str:
    """``"<expression>" · IoU 0.87 · presence 0.93`` (no-target pairs say
    whether the model answered "not here")."""
    parts = [f'"{text}"']
    if gt_empty:
        parts.append('no target: ' +
                     ('answered empty' if pred_empty else 'a mask was drawn'))
    else:
        parts.append(f'IoU {iou:.2f}')
    if presence is not None:
        parts.append(f'presence {presence:.2f}')
    return ' · '.join(parts)


def panel(img_bgr: np.ndarray, gt: np.ndarray, pred: np.ndarray,
          text: str) -> np.ndarray:
    """Ground truth | prediction side by side, RGB, captioned."""
    rgb = np.ascontiguousarray(img_bgr[..., ::-1])
    scale = display_scale(rgb.shape[1], 192)
    rgb = enlarge(rgb, scale)
    gt_big, pred_big = enlarge(gt, scale), enlarge(pred, scale)
    left = label_panel(
        draw_mask_overlay(rgb, gt_big, GT_COLOR), 'ground truth')
    right = label_panel(
        draw_mask_overlay(rgb, pred_big, PRED_COLOR), 'prediction')
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    return add_caption(np.concatenate([left, gap, right], axis=1), text)


def grid(panels: List[np.ndarray], columns: int) -> np.ndarray:
    """Panels in rows of ``columns`` on white, each padded to the largest."""
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    cells = [
        np.pad(
            p, ((0, h - p.shape[0] + 8), (0, w - p.shape[1] + 8), (0, 0)),
            constant_values=255) for p in panels
    ]
    cells += [np.full_like(cells[0], 255)] * (-len(cells) % columns)
    rows = [
        np.concatenate(cells[i:i + columns], axis=1)
        for i in range(0, len(cells), columns)
    ]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.num < 1 or args.columns < 1:
        sys.exit('--num and --columns must be >= 1')
    model = init_referring_model(
        args.config,
        args.checkpoint,
        device=args.device,
        cfg_options=args.cfg_options)
    cfg = model.cfg
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset_cfg = cfg[f'{args.split}_dataloader'].dataset
    loaders = Compose(
        [t for t in dataset_cfg.get('pipeline', []) if t['type'] in LOADERS])
    dataset = DATASETS.build(dict(dataset_cfg, pipeline=[]))
    if len(dataset) < args.num:
        sys.exit(f'the {args.split} split has {len(dataset)} pairs, fewer '
                 f'than --num {args.num}')
    predictor = ReferringPredictor(model)
    panels, lines = [], []
    for i in range(args.num):
        info = loaders(dataset.get_data_info(i))
        predictor.set_image(info['img'], name=f'{args.split} pair {i}')
        result = predictor.predict(info['text'])
        pred = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
        gt = np.asarray(info['gt_seg_map'])
        iou = mask_iou(pred, gt)
        presence = result.metainfo.get('presence')
        text = caption(info['text'], iou, not (gt == 1).any(), not pred.any(),
                       presence)
        panels.append(panel(info['img'], gt, pred, text))
        lines.append(f'{i}: {text}')
    sheet = grid(panels, args.columns)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    cv2.imwrite(args.out, np.ascontiguousarray(sheet[..., ::-1]))
    print('\n'.join(lines))
    print(f'contact sheet of {args.num} {args.split} pairs: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
