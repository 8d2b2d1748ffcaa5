"""Where do the text filters of a config start (or stand)?

Runs the backbone and the prompter of a config on samples of its dataset and
prints the statistics of the patch-text cosines and of the sigmoid filter
outputs ``sigmoid(s * cos + b)`` (local: per real token; global: sentence)::

    S=configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b
    python .dev_scripts/filter_stats.py \
        ${S}_8xb4-lora-200e_rrsisd-1024x1024.py --num-samples 64

With the config's pretrained files (default) it shows where training starts;
with ``--checkpoint`` (a runner checkpoint) where a trained model stands. A
filter output below 0.01 or above 0.99 is counted as saturated: its sigmoid
derivative is < 0.01, so almost no gradient reaches the towers through it.
The working window of cosines is ``[(-b - 3) / s, (-b + 3) / s]`` (logits
within +-3). Filter calibration (``model.neck.filter_cfg`` of type
``'calibrated'``) is applied as in the first training step when the neck has
it and has not been calibrated yet.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

try:
    import rsrefseg_mm  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..'))
    import rsrefseg_mm  # noqa: F401
from mmseg.registry import DATASETS, MODELS  # noqa: E402

from rsrefseg_mm.utils import drop_pretrained_checkpoints  # noqa: E402

SATURATION = 0.01


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument(
        '--checkpoint', help='runner checkpoint (else the pretrained files)')
    parser.add_argument(
        '--split', default='val', choices=['train', 'val', 'test'])
    parser.add_argument('--num-samples', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def quantiles(x: torch.Tensor) -> Dict[str, float]:
    """mean, std and the 1/5/50/95/99 % quantiles of a 1-D tensor."""
    x = x.double()
    if x.numel() > 1_000_000:  # torch.quantile's input limit
        x = x[torch.randperm(x.numel())[:1_000_000]]
    q = torch.quantile(x, x.new_tensor([0.01, 0.05, 0.5, 0.95, 0.99]))
    return dict(
        mean=float(x.mean()),
        std=float(x.std()),
        **{f'p{p}': float(v)
           for p, v in zip((1, 5, 50, 95, 99), q)})


@torch.no_grad()
def collect(model, batches) -> Dict[str, torch.Tensor]:
    """Cosines and filter outputs over ``batches`` (data_preprocessor
    inputs). Returns 1-D tensors ``local_cos``, ``global_cos``,
    ``local_act``, ``global_act`` and 0-dim ``scale``, ``bias``."""
    neck = model.neck
    out: Dict[str, List[torch.Tensor]] = {}
    for data in batches:
        data = model.data_preprocessor(data, False)
        metas = [s.metainfo for s in data['data_samples']]
        feats = model.backbone(data['inputs'], [m['text'] for m in metas])
        V = F.normalize(feats['img_feats'].float(), dim=1)
        local = torch.einsum('bdhw,bld->blhw', V,
                             F.normalize(feats['text_feats'].float(), dim=-1))
        glob = torch.einsum('bdhw,bd->bhw', V,
                            F.normalize(feats['text_global'].float(), dim=-1))
        weights = neck.token_weights(feats['text_mask']).bool()
        if getattr(neck, 'filter_calibration', None) and \
                not bool(neck.filters_calibrated):
            neck.calibrate_filters(feats, local, glob[:, None],
                                   weights.float())
        scale, bias = neck._scale_bias(feats, V)
        local = local[weights]  # (n_real_tokens, h, w)
        for k, v in (('local_cos', local), ('global_cos', glob),
                     ('local_act', (scale * local + bias).sigmoid()),
                     ('global_act', (scale * glob + bias).sigmoid())):
            out.setdefault(k, []).append(v.detach().flatten().cpu())
    stats = {k: torch.cat(v) for k, v in out.items()}
    stats['scale'], stats['bias'] = scale.detach().cpu(), bias.detach().cpu()
    return stats


def report(stats: Dict[str, torch.Tensor]) -> str:
    """Printable table of :func:`collect`'s statistics."""
    s, b = float(stats['scale']), float(stats['bias'])
    lines = [
        f'filter scale s = {s:.4g}, bias b = {b:.4g}; working window of '
        f'cosines (logits within +-3): [{(-b - 3) / s:.4f}, '
        f'{(-b + 3) / s:.4f}]', '',
        '| values | mean | std | p1 | p5 | p50 | p95 | p99 | saturated |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    for name in ('local', 'global'):
        for kind in ('cos', 'act'):
            x = stats[f'{name}_{kind}']
            q = quantiles(x)
            sat = ''
            if kind == 'act':
                sat = f'{100 * float(((x < SATURATION) | (x > 1 - SATURATION)).float().mean()):.1f} %'  # noqa: E501
            lines.append(f'| {name} {"cosine" if kind == "cos" else "filter"}'
                         f' | ' +
                         ' | '.join(f'{q[k]:.4f}'
                                    for k in ('mean', 'std', 'p1', 'p5', 'p50',
                                              'p95', 'p99')) + f' | {sat} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if args.checkpoint:
        drop_pretrained_checkpoints(cfg.model)
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if args.checkpoint:
        from mmengine.runner import load_checkpoint

        # through rsrefseg_mm's safe loader (registered on import)
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(args.device).eval()
    dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    n = min(args.num_samples, len(dataset))
    if n == 0:
        raise ValueError(f'the {args.split} split of {args.config} is empty')
    batches = []
    for start in range(0, n, args.batch_size):
        items = [
            dataset[i] for i in range(start, min(n, start + args.batch_size))
        ]
        batches.append(
            dict(
                inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items]))
    print(f'{n} {args.split} samples of {args.config}')
    print(report(collect(model, batches)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
