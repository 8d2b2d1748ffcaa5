"""Pretrain the tiny CLIP towers of the ``make demo`` config on synthetic
scenes, contrastively (SigLIP's sigmoid loss), and save them as a CLIP
weight file that ``CLIPBackbone(checkpoint=...)`` loads.

    python tools/misc/pretrain_demo_clip.py CONFIG OUT.pth [--iters 300]

The real RSRefSeg starts from a pretrained CLIP / SigLIP, whose patch
features already tell shapes and colours apart; the demo's towers are
random. This is their pretraining stage, seconds to a minute on one CPU
thread:

- **Images**: scenes of the synthetic referring generator (1-4 coloured
  shapes on the textured background, :mod:`rsrefseg_mm.datasets.
  synthetic_scenes`), drawn from their own random stream (seed 2**20 + N),
  not the dataset's train / val / test scenes.
- **Captions**: the attribute phrases of the referring expressions, ``"the
  red circle"``, ``"the red object"``, ``"the circle"`` (6 colours x 4
  shapes + 6 + 4 = 34). Every step scores each image against all of them.
- **Loss**: SigLIP's pairwise sigmoid loss. An image-caption pair is
  positive when an object of the image fits the caption (a scene has
  several objects, so an image has several positive captions). Its logit
  is ``s * max_p cos(v_p, t) + b`` over the image's patch features ``v_p``
  and the caption's end-of-text feature ``t``: the pooling that makes the
  patch features, not the class token, carry the objects, since
  RSRefSeg's text filters compare exactly these (``TextFilterNeck``:
  ``sigmoid(s * cos(V, t_g) + b)``). ``s`` is the backbone's fixed
  ``logit_scale`` (1 / 0.07); ``b`` is learnt here and not saved.
  ``--dense-weight`` adds the per-patch form of the same BCE (the share of
  each patch that objects fitting the caption cover), the grounding loss of
  the main training applied to every caption.

The file holds OpenAI CLIP's keys (text tower at the top level,
``attn.in_proj_weight``, ``attn.out_proj``; ``logit_scale``), so
:func:`~rsrefseg_mm.models.backbones.clip.clip_checkpoint.
load_clip_checkpoint` reads it like a released CLIP. At the end the tool
prints a zero-shot check on held-out scenes: each object's patch features
(averaged over the patches it covers) against the 24 ``"the <colour>
<shape>"`` captions, the share whose shape / colour / both come out right
(chance 25 %, 17 %, 4 %).
"""
import argparse
import os
import os.path as osp
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: Random stream of the pretraining scenes (the dataset's splits use
#: (seed, 0 / 1 / 2, index)).
STREAM = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'config',
        help='config whose model.backbone is the '
        'CLIPBackbone to pretrain')
    parser.add_argument('out', help='output weight file (.pth)')
    parser.add_argument('--iters', type=int, default=1200)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument(
        '--num-scenes',
        type=int,
        default=1000,
        help='scenes rendered once; the steps draw batches from them')
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--weight-decay', type=float, default=0.01)
    parser.add_argument(
        '--num-objects',
        type=int,
        nargs=2,
        default=(1, 4),
        help='inclusive range of objects per scene')
    parser.add_argument(
        '--dense-weight',
        type=float,
        default=0.0,
        help='weight of the per-patch BCE next to the pooled SigLIP loss')
    parser.add_argument(
        '--region-weight',
        type=float,
        default=5.0,
        help="weight of CLIP's InfoNCE between object regions and colour + "
        'shape captions (0: the SigLIP loss alone)')
    parser.add_argument(
        '--eval-scenes',
        type=int,
        default=100,
        help='held-out scenes of the zero-shot check (0: none)')
    parser.add_argument(
        '--clip-grad',
        type=float,
        default=100.0,
        help='max gradient norm (the InfoNCE term needs large steps at '
        'first: norms of 20-60 while the shapes separate)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides of the config (e.g. model.backbone.arch.num_layers=4'
        '); the main training must use the same backbone arch')
    parser.add_argument('--log-interval', type=int, default=50)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.batch_size < 1:
        parser.error('--iters and --batch-size must be >= 1')
    lo, hi = args.num_objects
    if not 1 <= lo <= hi:
        parser.error('--num-objects must be MIN MAX with 1 <= MIN <= MAX')
    return args


def captions() -> List[Tuple[str, str, str]]:
    """``(text, colour or None, shape or None)`` of every caption."""
    from rsrefseg_mm.datasets.synthetic_scenes import COLORS, SHAPES
    out = [(f'the {c} {s}', c, s) for c in COLORS for s in SHAPES]
    out += [(f'the {c} object', c, None) for c in COLORS]
    out += [(f'the {s}', None, s) for s in SHAPES]
    return out


def sample_scene(rng: np.random.Generator, img_size: int,
                 num_objects: Sequence[int], size_range: Tuple[float,
                                                               float]) -> dict:
    """Objects placed as the referring generator places them."""
    from rsrefseg_mm.datasets.synthetic_scenes import _place_objects
    while True:
        num = int(rng.integers(num_objects[0], num_objects[1] + 1))
        objects = _place_objects(rng, num, img_size, size_range)
        if len(objects) == num:
            return dict(
                objects=objects, texture_seed=int(rng.integers(2**31 - 1)))


def render_pool(rng: np.random.Generator, num_scenes: int, img_size: int,
                grid: int, num_objects: Sequence[int],
                caps: Sequence[Tuple[str, str, str]]):
    """Images (N, 3, H, W) RGB 0-255 uint8, positives (N, K) and patch
    targets (N, K, grid, grid): the share of each patch covered by objects
    that fit caption k."""
    from rsrefseg_mm.datasets.synthetic_scenes import render_scene
    imgs, labels, cover = [], [], []
    cell = img_size // grid
    for _ in range(num_scenes):
        scene = sample_scene(rng, img_size, num_objects, (0.15, 0.35))
        img, masks = render_scene(scene, img_size)
        pooled = [
            m.reshape(grid, cell, grid, cell).mean((1, 3)) for m in masks
        ]
        lab = np.zeros(len(caps), np.float32)
        cov = np.zeros((len(caps), grid, grid), np.float32)
        for k, (_, color, shape) in enumerate(caps):
            for obj, p in zip(scene['objects'], pooled):
                if color in (None, obj['color']) and \
                        shape in (None, obj['shape']):
                    lab[k] = 1
                    cov[k] += p
        imgs.append(img[..., ::-1].transpose(2, 0, 1))  # BGR -> RGB
        labels.append(lab)
        cover.append(np.minimum(cov, 1))
    return (torch.from_numpy(np.ascontiguousarray(np.stack(imgs))),
            torch.from_numpy(np.stack(labels)),
            torch.from_numpy(np.stack(cover)))


def to_openai_state_dict(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict':
    """CLIPBackbone keys -> OpenAI CLIP keys (the inverse of
    ``convert_clip_state_dict``)."""
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith('text.'):
            k = k[len('text.'):]
        k = k.replace('attn.qkv.weight', 'attn.in_proj_weight')
        k = k.replace('attn.qkv.bias', 'attn.in_proj_bias')
        k = k.replace('attn.proj.', 'attn.out_proj.')
        v = v.detach().clone()
        out[k] = v.float() if v.is_floating_point() else v
    return out


def build_backbone(config: str, seed: int, cfg_options=None):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401 (registers the modules)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope('mmseg')
    bb = cfg.model.backbone.copy()
    if bb.get('type') != 'CLIPBackbone':
        raise SystemExit(f'{config}: model.backbone is {bb.get("type")}, '
                         'this tool pretrains a CLIPBackbone')
    bb.update(
        checkpoint=None,
        image_tuning=dict(mode='full'),
        text_tuning=dict(mode='full'))
    torch.manual_seed(seed)
    return MODELS.build(bb)


def caption_logits(backbone, imgs: torch.Tensor, text_feats: torch.Tensor,
                   bias: torch.Tensor):
    """Per-patch logits (B, K, h, w) and pooled logits (B, K)."""
    _, feats = backbone.encode_image(imgs)  # (B, D, h, w)
    v = F.normalize(feats, dim=1)
    cos = torch.einsum('bdhw,kd->bkhw', v, F.normalize(text_feats, dim=-1))
    scale = backbone.logit_scale.exp().detach()
    patch = scale * cos + bias
    return patch, patch.flatten(2).amax(-1), v


def region_infonce(v: torch.Tensor, text_feats: torch.Tensor,
                   cover: torch.Tensor, labels: torch.Tensor,
                   pair_idx: Sequence[int], scale) -> torch.Tensor:
    """CLIP's InfoNCE between object regions and colour + shape captions.

    A region is what one colour + shape caption covers in one image (its
    patch features averaged with the cover as weights). Region -> caption:
    softmax over the colour + shape captions; caption -> region: softmax
    over the batch's regions (regions of the same caption are all
    positives). The softmax makes the captions compete, so shape words are
    told apart even while the image features only know colours (a sigmoid
    loss alone lets "the circle" and "the square" settle on one feature).
    """
    idx = torch.as_tensor(pair_idx)
    lab = labels[:, idx]  # (B, P)
    b, k = lab.nonzero(as_tuple=True)
    if len(b) == 0:
        return v.new_zeros(())
    w = cover[:, idx][b, k]  # (R, h, w)
    r = (v[b] * w[:, None]).sum((2, 3)) / w.sum(
        (1, 2)).clamp(min=1e-6)[:, None]
    t = F.normalize(text_feats[idx], dim=-1)
    logits = scale * F.normalize(r, dim=-1) @ t.T  # (R, P)
    to_text = F.cross_entropy(logits, k)
    pos = (k[None, :] == torch.arange(len(idx))[:, None])  # (P, R)
    col = logits.T  # (P, R)
    present = pos.any(1)
    to_region = (torch.logsumexp(col, 1) - torch.logsumexp(
        col.masked_fill(~pos, float('-inf')), 1))[present].mean()
    return 0.5 * (to_text + to_region)


@torch.no_grad()
def zero_shot(backbone, args, caps, text_feats) -> Dict[str, float]:
    """Per held-out object: its patch features (cover-weighted mean)
    against the 24 colour + shape captions."""
    from rsrefseg_mm.datasets.synthetic_scenes import render_scene
    backbone.eval()
    rng = np.random.default_rng([args.seed, STREAM, 1])
    img_size = backbone.image_size[0]
    grid = img_size // backbone.visual.patch_size
    cell = img_size // grid
    pairs = [(k, c, s) for k, (_, c, s) in enumerate(caps)
             if c is not None and s is not None]
    t = F.normalize(text_feats[[k for k, _, _ in pairs]], dim=-1)
    hits = np.zeros(3)
    n = 0
    for _ in range(args.eval_scenes):
        scene = sample_scene(rng, img_size, (3, 4), (0.15, 0.35))
        img, masks = render_scene(scene, img_size)
        x = torch.from_numpy(
            np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))[None]
        _, feats = backbone.encode_image(x.float())
        v = F.normalize(feats[0], dim=0)  # (D, h, w)
        for obj, m in zip(scene['objects'], masks):
            w = torch.from_numpy(
                m.reshape(grid, cell, grid, cell).mean((1, 3))).float()
            f = (v * w).sum((1, 2)) / w.sum().clamp(min=1e-6)
            _, c, s = pairs[int((t @ f).argmax())]
            hits += [
                s == obj['shape'], c == obj['color'],
                (c, s) == (obj['color'], obj['shape'])
            ]
            n += 1
    backbone.train()
    return dict(zip(('shape', 'colour', 'both'), 100 * hits / max(n, 1)))


def pretrain(args) -> Dict[str, float]:
    torch.manual_seed(args.seed)
    backbone = build_backbone(args.config, args.seed, args.cfg_options)
    backbone.train()
    caps = captions()
    texts = [c[0] for c in caps]
    img_size = backbone.image_size[0]
    grid = img_size // backbone.visual.patch_size
    pair_idx = [k for k, (_, c, s) in enumerate(caps) if c and s]
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    params = [p for p in backbone.parameters() if p.requires_grad] + [bias]
    opt = torch.optim.AdamW(
        params, lr=args.lr, weight_decay=args.weight_decay, fused=True)
    warmup = max(1, args.iters // 10)

    def lr_at(it):  # linear warm-up, cosine decay to 1 %
        if it < warmup:
            return args.lr * (it + 1) / warmup
        p = (it - warmup) / max(1, args.iters - warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * p)))

    rng = np.random.default_rng([args.seed, STREAM, 0])
    start = time.time()
    pool = render_pool(rng, args.num_scenes, img_size, grid, args.num_objects,
                       caps)
    print(
        f'{args.num_scenes} scenes rendered ({time.time() - start:.0f} s)',
        flush=True)
    order = np.zeros(0, np.int64)
    for it in range(args.iters):
        for g in opt.param_groups:
            g['lr'] = lr_at(it)
        if len(order) < args.batch_size:  # epochs over the pool
            order = np.concatenate([order, rng.permutation(args.num_scenes)])
        idx, order = order[:args.batch_size], order[args.batch_size:]
        imgs, labels, cover = (t[torch.from_numpy(idx)] for t in pool)
        imgs = imgs.float()
        text_feats = backbone.encode_text(texts)[0]
        patch, pooled, v = caption_logits(backbone, imgs, text_feats, bias)
        # SigLIP: -log sigmoid(z * logit), z = +-1, summed over the pairs
        # and divided by the number of images
        z = 2 * labels - 1
        loss = -F.logsigmoid(z * pooled).sum() / len(imgs)
        region = torch.zeros(())
        if args.region_weight > 0:
            region = region_infonce(v, text_feats, cover, labels, pair_idx,
                                    backbone.logit_scale.exp().detach())
            loss = loss + args.region_weight * region
        dense = torch.zeros(())
        if args.dense_weight > 0:
            dense = F.binary_cross_entropy_with_logits(patch, cover)
            loss = loss + args.dense_weight * dense
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        opt.step()
        if (it + 1) % args.log_interval == 0 or it + 1 == args.iters:
            acc = ((pooled > 0).float() == labels).float().mean()
            print(
                f'iter {it + 1}/{args.iters}  loss {loss.item():.4f}  '
                f'region {region.item():.4f}  '
                f'dense {dense.item():.4f}  pair acc {100 * acc:.1f} %  '
                f'bias {bias.item():.2f}  grad norm {gn:.2f}  '
                f'{time.time() - start:.0f} s',
                flush=True)
    result = {}
    if args.eval_scenes > 0:
        with torch.no_grad():
            text_feats = backbone.encode_text(texts)[0]
        result = zero_shot(backbone, args, caps, text_feats)
        print('zero-shot on {} held-out scenes: shape {shape:.1f} %, '
              'colour {colour:.1f} %, both {both:.1f} % (chance 25 / 17 / '
              '4 %)'.format(args.eval_scenes, **result))
    state = {
        k: v
        for k, v in backbone.state_dict().items()
        if k.startswith(('visual.', 'text.')) or k == 'logit_scale'
    }
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp'
    torch.save(to_openai_state_dict(state), tmp)
    os.replace(tmp, args.out)
    print(f'saved {args.out} ({time.time() - start:.0f} s)')
    return result


def main(argv=None) -> int:
    pretrain(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
