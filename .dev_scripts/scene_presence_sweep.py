"""Which presence threshold should the windows of a scene have? Runs a
model with sliding windows over the scene benchmark's synthetic scenes and
prints, for each candidate threshold, how often each expression kind is
found (IoU >= 0.5) and how often a no-target expression gets an empty
mask, plus the window presences behind them::

    python .dev_scripts/scene_presence_sweep.py CONFIG CHECKPOINT \\
        --size 1024 --scenes 3 --seed 100 --thresholds 0.5 0.9 0.99

Use seeds other than the benchmark's (``benchmark.py scene`` draws seeds
0, 1, ...): the threshold chosen here is then measured on scenes it was
not chosen on. Each scene is encoded once; every threshold answers the
same window embeddings.
"""
import argparse
import os.path as osp
import sys
import tempfile

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
KINDS = ('one', 'several', 'absent')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--size', type=int, default=1024, help='scene side')
    p.add_argument('--scenes', type=int, default=3, help='per colour mode')
    p.add_argument('--seed', type=int, default=100, help='seed of scene 0')
    p.add_argument(
        '--thresholds', type=float, nargs='+', default=[0.5, 0.9, 0.99])
    p.add_argument('--threads', type=int, default=1)
    return p.parse_args()


def main():
    args = parse_args()
    import rasterio
    import torch

    from rsrefseg_core.scene import ScenePredictor
    from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
    from rsrefseg_mm.datasets.synthetic_large_scene import (
        generate_large_scene, write_large_scene)
    torch.set_num_threads(args.threads)
    model = init_referring_model(args.config, args.checkpoint, 'cpu')
    scene = ScenePredictor(ReferringPredictor(model), progress=False)
    floor = scene.runtime.presence_threshold  # windows below: not decoded
    if floor is None:
        sys.exit(f'{args.config}: the model has no presence output')
    thresholds = sorted(t for t in args.thresholds if t >= floor)
    results = []  # (colours, kind, threshold, found, iou)
    windows = []  # (colours, kind, holds the referent, presence)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.scenes):
            for colours in ('shared', 'exclusive'):
                info = write_large_scene(
                    generate_large_scene(
                        args.seed + k, args.size, referent_colours=colours),
                    tmp, f'{colours}{k}')
                scene.set_scene(info['path'], bands=(1, 2, 3), stretch=None)
                for expr in info['expressions']:
                    with rasterio.open(expr['gt_path']) as f:
                        gt = f.read(1) > 0
                    for t in thresholds:
                        scene.presence_threshold = t
                        r = scene.predict(expr['text'], keep_probability=True)
                        union = (r.mask | gt).sum()
                        iou = (r.mask & gt).sum() / union if union else 1.0
                        results.append(
                            (colours, expr['kind'], t, r.found, iou))
                    for (y1, y2, x1, x2), p in zip(scene.grid.boxes,
                                                   r.window_presence):
                        windows.append(
                            (colours, expr['kind'], bool(gt[y1:y2,
                                                            x1:x2].any()), p))
    scene.close()
    print(f'\n{osp.basename(args.config)}, {args.checkpoint}; '
          f'{args.scenes} scenes of {args.size} px per colour mode (seeds '
          f'{args.seed}-{args.seed + args.scenes - 1}); model presence '
          f'threshold {floor}\n')
    print('| threshold | colours | one: hit | several: hit | '
          'no target: empty |')
    print('| --- | --- | --- | --- | --- |')
    for t in thresholds:
        for colours in ('shared', 'exclusive'):
            cells = []
            for kind in KINDS:
                rows = [(f, i) for c, k, tt, f, i in results
                        if (c, k, tt) == (colours, kind, t)]
                good = sum(not f if kind == 'absent' else i >= 0.5
                           for f, i in rows)
                cells.append(f'{good}/{len(rows)}')
            print(f'| {t:g} | {colours} | ' + ' | '.join(cells) + ' |')
    print('\nWindow presence (windows with data):\n')
    print('| colours | expression | windows with the referent: n, min, '
          'median | other windows: n, >= 0.5, >= 0.9, >= 0.99, max |')
    print('| --- | --- | --- | --- |')
    for colours in ('shared', 'exclusive'):
        for kind in KINDS:
            on = np.array([
                p for c, k, h, p in windows
                if (c, k) == (colours, kind) and h and not np.isnan(p)
            ])
            off = np.array([
                p for c, k, h, p in windows
                if (c, k) == (colours, kind) and not h and not np.isnan(p)
            ])
            held = f'{len(on)}, {on.min():.3f}, {np.median(on):.3f}' \
                if len(on) else '0'
            print(f'| {colours} | {kind} | {held} | {len(off)}, '
                  f'{(off >= .5).sum()}, {(off >= .9).sum()}, '
                  f'{(off >= .99).sum()}, {off.max():.3f} |')


if __name__ == '__main__':
    main()
