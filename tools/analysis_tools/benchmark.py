# Benchmark an RSRefSeg config: speed, memory and FLOPs per stage, the SAM
# encoder against stock segment-anything, and training-step memory with and
# without activation checkpointing. See docs/benchmark.md.
"""Benchmark an RSRefSeg model on random inputs.

Modes (one markdown table each):

* default: inference (``mode='predict'``) at ``--batch-size``: images/s,
  latency median / p90, peak memory, time and FLOPs per stage (CLIP/SigLIP
  encoder towers, prompter neck, SAM image encoder, SAM prompt encoder +
  mask decoder);
* ``--compare-stock``: in addition, the SAM image encoder as built (fast
  attention, LoRA) next to segment-anything's stock ``ImageEncoderViT``
  holding the same (LoRA-merged) weights, plus the stock encoder with only
  the attention switched to SDPA; interleaved repeats, same input, medians
  and ratios (``--stock-only`` skips the whole-model table);
* ``--expressions-per-image K``: one image and K expressions, answered by
  ``ReferringPredictor`` (image encoded once) next to K one-pass forwards:
  first-query and follow-up latency, K expressions both ways, ratios;
* ``--train``: one subprocess per ``with_cp`` setting (SAM encoder
  activation checkpointing off / on) runs training steps and reports its peak
  memory (max RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU).

Weights are random (the config's ``checkpoint`` paths are cleared, so no
weight file is needed) unless ``--checkpoint`` gives a runner checkpoint.
SigLIP configs still need a ``spiece.model``: the one of the SigLIP folder,
or, without it, one trained by ``tools/misc/train_spiece.py``, passed with
``--cfg-options model.backbone.tokenizer=PATH``.
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (one
multiply-add = 2 FLOPs) during the first warm-up iteration.
The warm-up and timed loops draw progress bars (rate, ETA) on stderr when it
is a terminal (``--progress on|off`` forces them on or off); the tables go
to stdout.

Example::

    B=configs/rsrefseg/rsrefseg-b_clip-vit-b16-sam-vit-b
    python tools/analysis_tools/benchmark.py \\
        ${B}_8xb4-lora-200e_rrsisd-1024x1024.py \\
        --compare-stock --batch-size 1 --repeats 3
    S=configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b
    python tools/analysis_tools/benchmark.py \\
        ${S}_8xb4-lora-200e_rrsisd-1024x1024.py \\
        --cfg-options model.backbone.tokenizer=work_dirs/spiece/spiece.model
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
from typing import List, Optional, Sequence

# benchmark_utils lives beside this script
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
# yapf: disable
from benchmark_utils import (STAGES, TEXTS, amp_context,  # noqa: E402,F401
                             benchmark_inference, benchmark_stock,
                             benchmark_train_steps, build_model, env_line,
                             flop_counter, fmt_g, input_size, load_config,
                             make_samples, merged_sam_state_dict,
                             print_inference, print_stock, print_train,
                             synchronize)

# yapf: enable


# ------------------------------------------------------------------ args
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark an RSRefSeg model (random inputs)')
    parser.add_argument('config', help='model config file')
    parser.add_argument(
        '--checkpoint',
        help='runner checkpoint to load (default: random weights)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='bfloat16 autocast (inference) / SkipNonFiniteAmpOptimWrapper '
        '(training, GPU only)')
    parser.add_argument(
        '--train',
        action='store_true',
        help='training steps with SAM-encoder activation checkpointing off '
        'and on, each in its own subprocess (peak memory)')
    parser.add_argument(
        '--with-cp',
        choices=['both', 'on', 'off'],
        default='both',
        help='--train: which with_cp settings to run')
    parser.add_argument(
        '--expressions-per-image',
        type=int,
        metavar='K',
        help='one image, K expressions: ReferringPredictor vs K forwards')
    parser.add_argument(
        '--compare-stock',
        action='store_true',
        help='SAM image encoder vs stock segment-anything, same weights')
    parser.add_argument(
        '--stock-only',
        action='store_true',
        help='with --compare-stock: skip the whole-model inference table')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu | cuda (default: cuda when available)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size (default: the data_preprocessor's size)")
    parser.add_argument(
        '--no-flops', action='store_true', help='skip FLOP counting')
    parser.add_argument(
        '--threads', type=int, help='torch.set_num_threads on CPU')
    parser.add_argument(
        '--json', help='also write the results to this JSON file')
    parser.add_argument(
        '--progress',
        choices=['auto', 'on', 'off'],
        default='auto',
        help='progress bars (rate, ETA) on stderr: auto = on terminals only')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=None,
        help='override config settings, key=value (mmengine DictAction)')
    parser.add_argument(
        '--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cfg_options is not None:
        from mmengine.config import DictAction
        opts = argparse.Namespace()
        DictAction(
            option_strings=[], dest='cfg_options')(parser, opts,
                                                   args.cfg_options)
        args.cfg_options = opts.cfg_options
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error('--batch-size and --repeats must be >= 1, --warmup >= 0')
    if args.train and args.amp and not args.device.startswith('cuda'):
        parser.error('--train --amp trains in bf16 through '
                     'SkipNonFiniteAmpOptimWrapper (mmengine\'s '
                     'AmpOptimWrapper), which needs a GPU; train in fp32 on '
                     'CPU (without --amp)')
    return args


# ------------------------------------------------------------------ main
def progress_force(args) -> Optional[bool]:
    """``--progress`` as :func:`rsrefseg_mm.utils.track`'s ``force``."""
    return {'auto': None, 'on': True, 'off': False}[args.progress]


def train_worker(args) -> dict:
    """One --train measurement (run in a subprocess by :func:`main`)."""
    cfg = load_config(args.config, args.cfg_options)
    size = input_size(cfg, args.image_size)
    with_cp = args.with_cp == 'on'
    model = build_model(cfg, args.device, args.checkpoint, with_cp=with_cp)
    res = benchmark_train_steps(model, cfg, size, args.batch_size, args.device,
                                args.amp, args.warmup, args.repeats,
                                not args.no_flops, progress_force(args))
    res.update(
        with_cp=with_cp,
        with_cp_model=bool(model.decode_head.with_cp),
        size=list(size),
        env=env_line(args.device),
        cuda=args.device.startswith('cuda'))
    return res


def run_train_subprocesses(argv: Sequence[str], args) -> List[dict]:
    """Run :func:`train_worker` once per with_cp setting, each alone."""
    settings = ['off', 'on'] if args.with_cp == 'both' else [args.with_cp]
    results = []
    base = [a for a in argv]
    for cp_setting in settings:
        cmd = [
            sys.executable,
            osp.abspath(__file__), *base, '--worker', '--with-cp', cp_setting
        ]
        print(f'[benchmark] with_cp={cp_setting}: {" ".join(cmd)}', flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [
            ln for ln in proc.stdout.splitlines()
            if ln.startswith('BENCH_JSON ')
        ]
        if proc.returncode != 0 or not lines:
            sys.stdout.write(proc.stdout)
            raise RuntimeError(f'training worker (with_cp={cp_setting}) '
                               f'failed with exit code {proc.returncode}')
        results.append(json.loads(lines[-1][len('BENCH_JSON '):]))
    return results


def main(argv: Optional[Sequence[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda given but CUDA is not available')
    if args.worker:
        res = train_worker(args)
        print('BENCH_JSON ' + json.dumps(res), flush=True)
        return res
    out = {}
    if args.train:
        strip = {'--with-cp'}
        base, skip = [], False
        for a in argv:
            if skip:
                skip = False
                continue
            if a in strip:
                skip = True
                continue
            if a.startswith('--with-cp='):
                continue
            base.append(a)
        out['train'] = run_train_subprocesses(base, args)
        print_train(out['train'], args)
    elif args.expressions_per_image:
        from benchmark_utils.expressions import (benchmark_expressions,
                                                 print_expressions)
        cfg = load_config(args.config, args.cfg_options)
        size = input_size(cfg, args.image_size)
        model = build_model(cfg, args.device, args.checkpoint)
        model.cfg = cfg
        out['expressions'] = benchmark_expressions(model, size,
                                                   args.expressions_per_image,
                                                   args.device, args.amp,
                                                   args.warmup, args.repeats,
                                                   progress_force(args))
        print_expressions(out['expressions'], osp.basename(args.config),
                          args.expressions_per_image, env_line(args.device))
    else:
        cfg = load_config(args.config, args.cfg_options)
        size = input_size(cfg, args.image_size)
        model = build_model(cfg, args.device, args.checkpoint)
        torch.manual_seed(0)
        images = torch.rand(
            args.batch_size, 3, *size, device=args.device) * 255
        samples = make_samples(args.batch_size, size, args.device)
        if not (args.compare_stock and args.stock_only):
            out['inference'] = benchmark_inference(model, images, samples,
                                                   args.device, args.amp,
                                                   args.warmup, args.repeats,
                                                   not args.no_flops,
                                                   progress_force(args))
            print_inference(out['inference'], args, size)
        if args.compare_stock:
            out['stock'] = benchmark_stock(model, images, args.device,
                                           args.amp, args.warmup, args.repeats,
                                           progress_force(args))
            print_stock(out['stock'], args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == '__main__':
    main()
