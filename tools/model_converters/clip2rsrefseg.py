"""Convert OpenAI / open_clip CLIP weights to a plain CLIPBackbone .pth.

OpenAI's files (``ViT-B-16.pt``, ``ViT-L-14.pt``, ``ViT-L-14-336px.pt``) are
TorchScript archives in fp16. ``CLIPBackbone(checkpoint=...)`` reads them
directly, but a plain state dict loads without TorchScript, can be inspected
with ``torch.load`` and is what ``load_from``-style tooling expects.

The output is ``{'meta': {'converted_from': ..., 'state_dict_sha256': ...},
'state_dict': {...}}`` (the hash is checked whenever the file is loaded);
the keys are CLIPBackbone's (``visual.*``, ``text.*``, ``logit_scale``;
attention as ``attn.qkv`` / ``attn.proj``), fp32 unless ``--fp16``. With
``--prefix backbone.`` the keys fit a whole RSRefSeg model (e.g.
``load_from`` with the other parts random).

Usage::

    python tools/model_converters/clip2rsrefseg.py \\
        checkpoints/ViT-B-16.pt checkpoints/clip_vit-b16_rsrefseg.pth
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from rsrefseg_mm.models.backbones.clip.clip_checkpoint import (  # noqa: E402
    convert_clip_state_dict, infer_clip_arch, load_clip_file)
from rsrefseg_mm.utils import add_state_dict_hash  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an OpenAI CLIP TorchScript archive or an '
        'open_clip state dict to a plain CLIPBackbone state dict.')
    parser.add_argument('src', help='e.g. checkpoints/ViT-B-16.pt')
    parser.add_argument('dst', help='output .pth path')
    parser.add_argument(
        '--fp16', action='store_true', help='keep fp16 (default: fp32)')
    parser.add_argument(
        '--prefix', default='', help="key prefix, e.g. 'backbone.'")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    state_dict, dropped = convert_clip_state_dict(load_clip_file(args.src))
    dtype = torch.float16 if args.fp16 else torch.float32
    out = {
        args.prefix + k:
        (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in state_dict.items()
    }
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    checkpoint = dict(
        meta=dict(converted_from=osp.abspath(args.src)), state_dict=out)
    add_state_dict_hash(checkpoint)  # checked whenever it is loaded
    torch.save(checkpoint, args.dst)
    print(f'{args.src} ({infer_clip_arch(state_dict)}): {len(out)} tensors '
          f'-> {args.dst} ({dtype}); dropped metadata {dropped}')


if __name__ == '__main__':
    main()
