"""Segment the object an expression refers to, in your own image(s).

Single image:
    python demo/image_demo.py IMAGE "EXPRESSION" CONFIG CHECKPOINT \
        --out-dir DIR [--device cpu]
Batch (a .jsonl with {"image": ..., "text": ...} per line, or a .csv with
columns image,text; relative image paths are resolved against the file):
    python demo/image_demo.py --batch pairs.jsonl CONFIG CHECKPOINT --out-dir DIR

For each pair it writes ``<stem>_mask.png`` (0/255), ``<stem>_overlay.png``
(prediction over the image, captioned with the expression) and
``<stem>_heatmap.png`` (the global text-filter activation).
"""
import argparse
import csv
import json
import os.path as osp
from pathlib import Path
from typing import List, Tuple

import mmcv
import numpy as np

from rsrefseg_mm.apis import inference_referring, init_referring_model
from rsrefseg_mm.utils import enable_unsafe_load
from rsrefseg_mm.visualization import add_caption, heatmap_overlay


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'inputs',
        nargs='*',
        help='IMAGE "EXPRESSION" CONFIG CHECKPOINT, or CONFIG CHECKPOINT '
        'with --batch')
    parser.add_argument('--batch', help='.jsonl or .csv of (image, text)')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle checkpoints without the safe loader\'s allow-list '
        '(torch.load weights_only=False; same as RSREFSEG_UNSAFE_LOAD=1). '
        'Pickles can run code: only for files you trust')
    parser.add_argument(
        '--opacity', type=float, default=0.5, help='mask opacity')
    args = parser.parse_args()
    n = 2 if args.batch else 4
    if len(args.inputs) != n:
        parser.error('expected IMAGE "EXPRESSION" CONFIG CHECKPOINT' if n == 4
                     else 'expected CONFIG CHECKPOINT with --batch')
    return args


def read_pairs(path: str) -> List[Tuple[str, str]]:
    """Read (image, text) pairs from a .jsonl or .csv file."""
    base = Path(path).parent
    pairs = []
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        item = json.loads(line)
                        pairs.append((item['image'], item['text']))
                    except (json.JSONDecodeError, KeyError) as e:
                        raise ValueError(f'{path}:{n}: expected a JSON object '
                                         f'with "image" and "text" ({e})')
    elif path.endswith('.csv'):
        with open(path, newline='', encoding='utf-8') as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                if 'image' not in row or 'text' not in row:
                    raise ValueError(f'{path}: needs columns image,text')
                pairs.append((row['image'], row['text']))
    else:
        raise ValueError(f'--batch expects a .jsonl or .csv file, got {path}')
    return [(p if osp.isabs(p) else str(base / p), t) for p, t in pairs]


def save_outputs(img_path: str, text: str, result, out_dir: Path,
                 opacity: float, stem: str) -> None:
    img = mmcv.imread(img_path, channel_order='rgb')
    mask = result.pred_sem_seg.data[0].cpu().numpy().astype(bool)
    mmcv.imwrite((mask * 255).astype(np.uint8), str(out_dir / f'{stem}_mask.png'))
    overlay = img.copy()
    overlay[mask] = ((1 - opacity) * img[mask] +
                     opacity * np.array([255, 64, 64])).astype(np.uint8)
    mmcv.imwrite(
        mmcv.rgb2bgr(add_caption(overlay, text)),
        str(out_dir / f'{stem}_overlay.png'))
    heat = heatmap_overlay(img, result.global_map.data[0].cpu().numpy())
    mmcv.imwrite(
        mmcv.rgb2bgr(add_caption(heat, f'global activation: {text}')),
        str(out_dir / f'{stem}_heatmap.png'))
    print(f'{img_path}: "{text}" -> {int(mask.sum())} px; '
          f'{out_dir / stem}_{{mask,overlay,heatmap}}.png')


def main() -> None:
    args = parse_args()
    if args.unsafe_load:
        enable_unsafe_load()
    if args.batch:
        config, checkpoint = args.inputs
        pairs = read_pairs(args.batch)
    else:
        image, text, config, checkpoint = args.inputs
        pairs = [(image, text)]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = init_referring_model(config, checkpoint, device=args.device)
    for i, (img_path, text) in enumerate(pairs):
        result = inference_referring(model, img_path, text)
        # in batch mode an image may come with several expressions
        stem = Path(img_path).stem if not args.batch else \
            f'{i:05d}_{Path(img_path).stem}'
        save_outputs(img_path, text, result, out_dir, args.opacity, stem)


if __name__ == '__main__':
    main()
