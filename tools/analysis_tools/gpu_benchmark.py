# RSRefSeg throughput and MFU on one CUDA GPU (bf16), next to the authors'
# compute path; `--smoke` is a CPU dry run of every step on the tiny config.
"""RSRefSeg on one GPU: inference and LoRA training throughput, MFU, and
the authors' compute path timed in the same run.

Steps (random weights, inputs at the config's size, bf16 autocast,
CUDA-synchronised timing, medians over repeats after warm-up):

1. dense bf16 matmul ceiling (8192^3, measured);
2. eager inference ``mode='predict'`` at ``--infer-batch`` (and batch 1)
   with a per-stage split and FLOPs counted by ``FlopCounterMode``, for
   each SAM ``rel_pos_mode`` in ``--rel-pos-modes`` (``auto``: the
   per-device default, folded into q/k on GPUs; ``mask``: the full
   additive bias, for comparison);
3. eager LoRA training steps (``model.train_step``: data preprocessor,
   loss, backward, AdamW through the config's optimizer constructor: the
   trainable parameters only, fused on CUDA; mmengine's
   ``AmpOptimWrapper`` in bf16) at ``--train-batch``, same modes, SAM
   encoder activation checkpointing per ``--with-cp``;
4. the authors' compute path (``authors_path.py``: transformers
   ``SamVisionModel`` + ``SiglipModel`` of the same sizes, random weights,
   eager, SDPA) at ``--infer-batch``, and the ratio ours / theirs;
5. SAM image encoder: stock segment-anything vs ours (``--skip-stock``);
6. ``--find-max-batch``: the largest inference / training batch that fits
   in ``--memory-cap-gib`` (80 GiB by default);
7. ``--compile [MODE]``: the same model with its hot paths compiled
   (``rsrefseg_mm.engine.compile_hot_paths``: the encoder towers, the SAM
   image encoder), inference and training, with the compile time (first
   call).

MFU figures: see ``benchmark_utils/gpu_report.py``. Results: Markdown on
stdout and in ``OUT/gpu_benchmark.md``, everything in
``OUT/gpu_benchmark.json`` (rewritten after each step).

Example (the project's environment on a CUDA machine)::

    python tools/analysis_tools/gpu_benchmark.py --compile \
        --find-max-batch both --out work_dirs/gpu_benchmark
    python tools/analysis_tools/gpu_benchmark.py --smoke --compile  # CPU
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, Optional, Sequence

# benchmark_utils lives beside this script
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import benchmark_utils as bu  # noqa: E402
import torch  # noqa: E402
from benchmark_utils import gpu_report, gpu_runs  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    ROOT, 'configs', 'rsrefseg',
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=CONFIG)
    p.add_argument(
        '--cfg-options',
        nargs='+',
        default=None,
        help='override config settings, key=value (mmengine DictAction), '
        'e.g. model.backbone.tokenizer=PATH for the SigLIP configs')
    p.add_argument(
        '--smoke',
        action='store_true',
        help='CPU dry run of every step on the tiny demo config (batches '
        '2, one repeat; compile backend eager unless --compile-backend)')
    p.add_argument('--infer-batch', type=int, default=32)
    p.add_argument('--train-batch', type=int, default=16)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument(
        '--peak-tflops',
        type=float,
        default=989.4,
        help='peak dense bf16 TFLOP/s of the MFU figures (default: the '
        'H100 / H200 SXM specification)')
    p.add_argument(
        '--rel-pos-modes',
        nargs='+',
        default=['auto', 'mask'],
        choices=['auto', 'mask', 'chunked', 'augmented'],
        help="SAM rel_pos_mode of the eager runs ('auto': the per-device "
        "default; 'chunked' is inference-only)")
    p.add_argument(
        '--with-cp',
        choices=['off', 'on', 'both'],
        default='off',
        help='SAM encoder activation checkpointing in the training runs')
    p.add_argument(
        '--compile',
        nargs='?',
        const='default',
        metavar='MODE',
        help='also time the model with its hot paths compiled, MODE a '
        'torch.compile mode (e.g. max-autotune-no-cudagraphs; '
        'reduce-overhead = CUDA graphs, inference only here)')
    p.add_argument('--compile-backend', default=None)
    p.add_argument(
        '--authors-siglip',
        default='config',
        choices=['config', 'so400m-384', 'none'],
        help="SigLIP of the authors' path: the sizes of the config's "
        "towers, the authors' so400m@384, or skip the authors' path")
    p.add_argument(
        '--find-max-batch',
        choices=['none', 'infer', 'train', 'both'],
        default='none')
    p.add_argument(
        '--memory-cap-gib',
        type=float,
        default=80.,
        help='memory of --find-max-batch (default: an 80 GiB card)')
    p.add_argument('--max-batch', type=int, default=512)
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-stock', action='store_true')
    p.add_argument('--device', default='cuda')
    p.add_argument('--out', default='work_dirs/gpu_benchmark')
    args = p.parse_args(argv)
    if args.cfg_options is not None:
        from mmengine.config import DictAction
        opts = argparse.Namespace()
        DictAction(
            option_strings=[], dest='cfg_options')(p, opts, args.cfg_options)
        args.cfg_options = opts.cfg_options
    if args.smoke:
        args.device = 'cpu'
        args.config = sorted(
            glob.glob(
                osp.join(ROOT, 'configs', 'rsrefseg',
                         'rsrefseg-tiny_*.py')))[0]
        args.infer_batch = args.train_batch = 2
        args.warmup, args.repeats = 1, 1
        if args.compile_backend is None:
            args.compile_backend = 'eager'
    return args


def run_authors_path(model, args) -> Dict:
    """Time the authors' compute path at the sizes of ``model``."""
    import authors_path
    sam, sig = authors_path.build_authors_models(model, args.authors_siglip,
                                                 args.device)
    res = authors_path.benchmark_authors_path(sam, sig, args.infer_batch,
                                              args.device, True, args.warmup,
                                              args.repeats)
    res['siglip'] = args.authors_siglip
    del sam, sig
    if args.device.startswith('cuda'):
        torch.cuda.empty_cache()
    gpu_runs.log(
        f"authors' path (transformers SAM + SigLIP '{args.authors_siglip}')"
        f' batch {args.infer_batch}: {res["images_per_s"]:.1f} img/s')
    return res


def save(res: Dict, out_dir: str) -> None:
    """Write the results so far (an interrupted run keeps its finished
    steps)."""
    with open(osp.join(out_dir, 'gpu_benchmark.json'), 'w') as f:
        json.dump(res, f, indent=1, default=str)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run the steps of the module docstring.

    Returns:
        dict: The results (also in ``OUT/gpu_benchmark.json``).
    """
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    cuda = dev.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        raise SystemExit('CUDA is not available (use --smoke for a CPU run)')
    if args.find_max_batch != 'none' and not cuda:
        raise SystemExit('--find-max-batch needs a CUDA device')
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)
    t_start = time.perf_counter()
    res = dict(env=bu.env_line(dev), config=osp.basename(args.config))
    if cuda:
        res['sdp'] = dict(
            flash=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            math=torch.backends.cuda.math_sdp_enabled())
    gpu_runs.log(res['env'])
    res['matmul_tflops'] = gpu_runs.matmul_ceiling(dev) if cuda else None
    gpu_runs.log(f'bf16 matmul ceiling: {res["matmul_tflops"]} TFLOP/s')

    cfg = bu.load_config(args.config, args.cfg_options)
    size = bu.input_size(cfg, None)
    res['size'] = list(size)
    res['nominal_infer_flops'] = gpu_report.nominal_infer_flops(cfg, size)
    model = bu.build_model(cfg, dev)
    gpu_runs.log('model built')

    res['eager'] = {}
    for i, mode in enumerate(args.rel_pos_modes):
        gpu_runs.set_rel_pos_mode(model, mode)
        # batch-1 latency with the first mode only
        batches = sorted({1, args.infer_batch}) if i == 0 else \
            [args.infer_batch]
        run = dict(
            inference=gpu_runs.run_inference(
                model, size, args, batches, count_flops=i == 0))
        gpu_runs.log(f'eager inference, rel_pos_mode={mode}: ' +
                     ', '.join(f'batch {b} {r["images_per_s"]:.1f} img/s'
                               for b, r in run['inference'].items()))
        if not args.skip_train and mode != 'chunked':
            run['train'] = gpu_runs.run_training(
                model, cfg, size, args, count_flops=i == 0)
            for cp, r in run['train'].items():
                ips = 'OOM' if r is None else f'{r["images_per_s"]:.1f} img/s'
                gpu_runs.log(
                    f'eager training, rel_pos_mode={mode}, with_cp={cp}: '
                    f'{ips}')
        res['eager'][mode] = run
        save(res, args.out)
    gpu_runs.set_rel_pos_mode(model, 'auto')

    if args.authors_siglip != 'none':
        res['authors'] = run_authors_path(model, args)
        save(res, args.out)

    if not args.skip_stock:
        torch.manual_seed(0)
        images = torch.rand(4, 3, *size, device=dev) * 255
        res['stock'] = bu.benchmark_stock(model, images, dev, True,
                                          args.warmup, args.repeats)
        gpu_runs.log(f'SAM encoder stock/ours: {res["stock"]["speedup"]}')
        del images
        save(res, args.out)

    if args.find_max_batch != 'none':
        res['max_batch'] = gpu_runs.find_max_batches(model, cfg, size, args)
        save(res, args.out)

    if args.compile is not None:
        res['compiled'] = gpu_runs.run_compiled(model, cfg, size, args)

    res['wall_s'] = time.perf_counter() - t_start
    text = gpu_report.gpu_report(res, args)
    print(text)
    with open(osp.join(args.out, 'gpu_benchmark.md'), 'w') as f:
        f.write(text)
    save(res, args.out)
    return res


if __name__ == '__main__':
    main()
