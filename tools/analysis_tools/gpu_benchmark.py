# RSRefSeg throughput and MFU on one GPU (bf16), next to the authors'
# compute path. Run through gpu_benchmark.sh on a machine that gets the
# OpenMMLab stack as gpu_site/; `--smoke` is a CPU dry run on tiny sizes.
"""RSRefSeg on one GPU: inference and LoRA training throughput, MFU, and
the authors' compute path timed in the same run.

Steps (random weights, inputs at the config's size, bf16 autocast,
CUDA-synchronised timing, medians over repeats after warm-up):

1. dense bf16 matmul ceiling (8192^3, measured);
2. eager inference ``mode='predict'`` at ``--infer-batch`` (and batch 1)
   with a per-stage split and FLOPs counted by ``FlopCounterMode``, for
   each SAM ``rel_pos_mode`` in ``--rel-pos-modes`` (``auto``: the
   per-device default, folded into q/k on GPUs; ``mask``: the previous
   GPU default, for comparison);
3. eager LoRA training steps (``model.train_step``: data preprocessor,
   loss, backward, AdamW through the config's optimizer wrapper: the
   trainable parameters only, fused on CUDA) at ``--train-batch``, same
   modes, SAM encoder activation checkpointing per ``--with-cp``;
4. the authors' compute path (``authors_path.py``: transformers
   ``SamVisionModel`` + ``SiglipModel`` of the same sizes, random weights,
   eager, SDPA) at ``--infer-batch``, and the ratio ours / theirs;
5. SAM image encoder: stock segment-anything vs ours (``--skip-stock``);
6. ``--compile [MODE]``: the same model with its hot paths compiled
   (``rsrefseg_mm.engine.compile_hot_paths``: CLIP towers, SAM encoder),
   inference and training, with the compile time (first call);
7. ``--find-max-batch``: the largest inference / training batch that fits
   in ``--memory-cap-gib`` (80 GiB: an H100's memory, also on an H200).

MFU = achieved FLOP/s / peak. Nominal FLOPs per image: the SAM ViT-B image
encoder at 1024 is 972 GFLOPs (counted with ``FlopCounterMode`` on
segment-anything's encoder, one multiply-add = 2 FLOPs); the CLIP ViT-B/16
towers are allotted 28 G, i.e. 1000 G per image, kept as the reference of
earlier runs (the counted column gives the executed FLOPs: CLIP counts
35.1 G for the image tower at 224 + 6.0 G for the text tower). A training
step costs ~3x the forward FLOPs of the trained parts (forward + input
gradients + weight gradients); every RSRefSeg-b tower is LoRA-tuned, so
3 x 1000 = 3000 G per image; with LoRA the frozen base weights get no
weight gradient, so a step executes ~2x forward (counted). Other configs
(the paper's SigLIP one) get the counted figures only. Peak: ``--peak-tflops`` (989.4 = H100/H200 SXM dense
bf16 spec) and the measured matmul ceiling.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark as bm  # noqa: E402  (installs the mmcv.ops shim if asked)

import torch  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    ROOT, 'configs', 'rsrefseg',
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py')
#: SAM ViT-B image encoder at 1024 (FlopCounterMode) + CLIP-B/16 28 G
NOMINAL_INFER_GFLOPS = 972 + 28
TRAIN_FACTOR = 3  # fwd + dgrad + wgrad of the trained (LoRA) parts


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
    p.add_argument('--peak-tflops', type=float, default=989.4)
    p.add_argument(
        '--rel-pos-modes',
        nargs='+',
        default=['auto', 'mask'],
        choices=['auto', 'mask', 'chunked', 'augmented'],
        help="SAM rel_pos_mode of the eager runs ('auto': the per-device "
        "default; 'chunked' is inference-only)")
    p.add_argument(
        '--with-cp', choices=['off', 'on', 'both'], default='off',
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
        help="SigLIP of the authors' path: the sizes of our CLIP towers, "
        "the authors' so400m@384, or skip the authors' path")
    p.add_argument(
        '--find-max-batch',
        choices=['none', 'infer', 'train', 'both'],
        default='none')
    p.add_argument('--memory-cap-gib', type=float, default=80.)
    p.add_argument('--max-batch', type=int, default=512)
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-stock', action='store_true')
    p.add_argument('--device', default='cuda')
    p.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu'))
    args = p.parse_args(argv)
    if args.cfg_options is not None:
        from mmengine.config import DictAction
        opts = argparse.Namespace()
        DictAction(option_strings=[], dest='cfg_options')(p, opts,
                                                          args.cfg_options)
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


def log(msg: str) -> None:
    print(f'[gpu_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def matmul_ceiling(device: str, n: int = 8192, iters: int = 20) -> float:
    """Dense bf16 matmul TFLOP/s (median of 3 timed bursts)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(3):
        bm.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        bm.synchronize(device)
        rates.append(2 * n**3 * iters / (time.perf_counter() - t0) / 1e12)
    return sorted(rates)[1]


def mfu(flops_per_image, images_per_s, peak_tflops):
    if not flops_per_image or not peak_tflops:
        return None
    return flops_per_image * images_per_s / (peak_tflops * 1e12)


def pct(x) -> str:
    return '-' if x is None else f'{100 * x:.1f} %'


def nominal_infer_flops(cfg, size) -> Optional[float]:
    """Nominal inference FLOPs per image of RSRefSeg-b at 1024 (SAM ViT-B
    + CLIP ViT-B/16), None for other configs."""
    head, backbone = cfg.model.decode_head, cfg.model.backbone
    if head.get('sam_arch') == 'vit_b' and \
            backbone.get('arch') == 'ViT-B/16' and tuple(size) == (1024, 1024):
        return NOMINAL_INFER_GFLOPS * 1e9
    return None


def set_rel_pos_mode(model, mode: str) -> None:
    """Set ``rel_pos_mode`` of every SAM attention (``'auto'`` -> None)."""
    from rsrefseg_mm.models.sam import SAMFastAttention
    for m in model.modules():
        if isinstance(m, SAMFastAttention):
            m.rel_pos_mode = None if mode == 'auto' else mode


def largest_batch(fits: Callable[[int], bool],
                  start: int = 8,
                  limit: int = 512,
                  granularity: int = 4) -> int:
    """Largest batch size ``b <= limit`` with ``fits(b)``, assuming that
    fitting is monotonic: doubling from ``start``, then bisection down to
    ``granularity``.

    Args:
        fits (callable): Batch size -> whether one step runs within the
            memory cap.
        start (int): First size tried.
        limit (int): Largest size tried.
        granularity (int): Precision of the bisection.

    Returns:
        int: The size; 0 when not even ``min(start, 1)`` fits.
    """
    lo, b = 0, start
    while b <= limit and fits(b):
        lo, b = b, 2 * b
    hi = min(b, limit + 1)
    if lo == 0:
        if start > 1:  # try below the start
            return largest_batch(fits, 1, start - 1, 1)
        return 0
    while hi - lo > granularity:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or \
        'out of memory' in str(e)


def find_max_batches(model, cfg, size, args) -> Dict:
    """Largest inference and training batches within the memory cap."""
    dev = args.device
    total = torch.cuda.get_device_properties(dev).total_memory
    cap = min(1., args.memory_cap_gib * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(cap)
    out = dict(memory_cap_gib=args.memory_cap_gib, fraction=cap)

    def runs(fn):

        def fits(B):
            torch.cuda.empty_cache()
            try:
                fn(B)
                return True
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e):
                    raise
                return False
            finally:
                # a step cut short by OOM leaves partial gradients behind
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()

        return fits

    def infer(B):
        images = torch.rand(B, 3, *size, device=dev) * 255
        with torch.no_grad(), bm.amp_context(dev, True):
            model.eval()(images, bm.make_samples(B, size, dev),
                         mode='predict')

    def train(B):
        bm.benchmark_train_steps(model, cfg, size, B, dev, True, 0, 1,
                                 count_flops=False)

    try:
        for kind, fn in (('infer', infer), ('train', train)):
            if args.find_max_batch in (kind, 'both'):
                t0 = time.perf_counter()
                out[kind] = largest_batch(runs(fn), limit=args.max_batch)
                log(f'largest {kind} batch within {args.memory_cap_gib} GiB:'
                    f' {out[kind]} ({time.perf_counter() - t0:.0f} s)')
    finally:
        torch.cuda.set_per_process_memory_fraction(1.)
        model.eval()
    return out


def run_inference(model, size, args, batches, count_flops=True) -> Dict:
    dev, res = args.device, {}
    for B in batches:
        torch.manual_seed(0)
        images = torch.rand(B, 3, *size, device=dev) * 255
        samples = bm.make_samples(B, size, dev)
        res[str(B)] = bm.benchmark_inference(
            model, images, samples, dev, True, args.warmup, args.repeats,
            count_flops=count_flops and B == max(batches))
        del images
    return res


def run_training(model, cfg, size, args, count_flops=True) -> Dict:
    dev, res = args.device, {}
    settings = {'off': [False], 'on': [True], 'both': [False, True]}
    for with_cp in settings[args.with_cp]:
        model.decode_head.with_cp = with_cp
        if dev.startswith('cuda'):
            torch.cuda.empty_cache()
        try:
            res[str(with_cp)] = bm.benchmark_train_steps(
                model, cfg, size, args.train_batch, dev, True, args.warmup,
                args.repeats, count_flops=count_flops and not with_cp)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not _is_oom(e):
                raise
            log(f'train with_cp={with_cp}: out of memory')
            res[str(with_cp)] = None
    model.decode_head.with_cp = False
    model.eval()
    return res


def run_compiled(model, cfg, size, args) -> Dict:
    """Compile the hot paths, then time inference (and training)."""
    from rsrefseg_mm.engine import compile_hot_paths
    kwargs = {} if args.compile == 'default' else dict(mode=args.compile)
    if args.compile_backend:
        kwargs['backend'] = args.compile_backend
    set_rel_pos_mode(model, 'auto')
    targets = compile_hot_paths(model, **kwargs)
    dev, B = args.device, args.infer_batch
    torch.manual_seed(0)
    images = torch.rand(B, 3, *size, device=dev) * 255
    samples = bm.make_samples(B, size, dev)
    t0 = time.perf_counter()
    with torch.no_grad(), bm.amp_context(dev, True):
        model(images, samples, mode='predict')
    bm.synchronize(dev)
    res = dict(
        kwargs={k: str(v)
                for k, v in kwargs.items()},
        targets=targets,
        compile_infer_s=time.perf_counter() - t0)
    log(f'compiled {targets} with {kwargs}: first inference call '
        f'{res["compile_infer_s"]:.0f} s')
    res['inference'] = bm.benchmark_inference(
        model, images, samples, dev, True, args.warmup, args.repeats,
        count_flops=False)
    log(f'compiled inference batch {B}: '
        f'{res["inference"]["images_per_s"]:.1f} img/s')
    if not args.skip_train and args.compile != 'reduce-overhead':
        t0 = time.perf_counter()
        bm.benchmark_train_steps(model, cfg, size, args.train_batch, dev,
                                 True, 0, 1, count_flops=False)
        bm.synchronize(dev)
        res['compile_train_s'] = time.perf_counter() - t0
        res['train'] = bm.benchmark_train_steps(
            model, cfg, size, args.train_batch, dev, True, args.warmup,
            args.repeats, count_flops=False)
        model.eval()
        log(f'compiled training batch {args.train_batch}: '
            f'{res["train"]["images_per_s"]:.1f} img/s (first step '
            f'{res["compile_train_s"]:.0f} s)')
    return res


def run_authors_path(model, args) -> Dict:
    import authors_path
    sam, sig = authors_path.build_authors_models(model, args.authors_siglip,
                                                 args.device)
    res = authors_path.benchmark_authors_path(sam, sig, args.infer_batch,
                                              args.device, True,
                                              args.warmup, args.repeats)
    res['siglip'] = args.authors_siglip
    del sam, sig
    if args.device.startswith('cuda'):
        torch.cuda.empty_cache()
    log(f"authors' path (transformers SAM + SigLIP '{args.authors_siglip}')"
        f' batch {args.infer_batch}: {res["images_per_s"]:.1f} img/s')
    return res


def save(res: Dict, out_dir: str) -> None:
    """Write the results so far (a timed-out run keeps its finished steps)."""
    with open(osp.join(out_dir, 'gpu_benchmark.json'), 'w') as f:
        json.dump(res, f, indent=1, default=str)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
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
    res = dict(env=bm.env_line(dev), config=osp.basename(args.config))
    if cuda:
        res['sdp'] = dict(
            flash=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            math=torch.backends.cuda.math_sdp_enabled())
    log(res['env'])
    res['matmul_tflops'] = matmul_ceiling(dev) if cuda else None
    log(f'bf16 matmul ceiling: {res["matmul_tflops"]} TFLOP/s')

    cfg = bm.load_config(args.config, args.cfg_options)
    size = bm.input_size(cfg, None)
    res['size'] = list(size)
    res['nominal_infer_flops'] = nominal_infer_flops(cfg, size)
    model = bm.build_model(cfg, dev)
    log('model built')

    res['eager'] = {}
    for i, mode in enumerate(args.rel_pos_modes):
        set_rel_pos_mode(model, mode)
        run = dict(inference=run_inference(
            model, size, args,
            sorted({1, args.infer_batch}) if i == 0 else [args.infer_batch],
            count_flops=i == 0))
        log(f'eager inference, rel_pos_mode={mode}: ' + ', '.join(
            f'batch {b} {r["images_per_s"]:.1f} img/s'
            for b, r in run['inference'].items()))
        if not args.skip_train and mode != 'chunked':
            run['train'] = run_training(model, cfg, size, args,
                                        count_flops=i == 0)
            for cp, r in run['train'].items():
                ips = 'OOM' if r is None else f'{r["images_per_s"]:.1f} img/s'
                log(f'eager training, rel_pos_mode={mode}, with_cp={cp}: '
                    f'{ips}')
        res['eager'][mode] = run
        save(res, args.out)
    set_rel_pos_mode(model, 'auto')

    if args.authors_siglip != 'none':
        res['authors'] = run_authors_path(model, args)
        save(res, args.out)

    if not args.skip_stock:
        torch.manual_seed(0)
        images = torch.rand(4, 3, *size, device=dev) * 255
        res['stock'] = bm.benchmark_stock(model, images, dev, True,
                                          args.warmup, args.repeats)
        log(f'SAM encoder stock/ours: {res["stock"]["speedup"]}')
        del images
        save(res, args.out)

    if args.find_max_batch != 'none':
        res['max_batch'] = find_max_batches(model, cfg, size, args)
        save(res, args.out)

    if args.compile is not None:
        res['compiled'] = run_compiled(model, cfg, size, args)

    res['wall_s'] = time.perf_counter() - t_start
    text = report(res, args)
    print(text)
    with open(osp.join(args.out, 'gpu_benchmark.md'), 'w') as f:
        f.write(text)
    save(res, args.out)
    return res


def report(res: Dict, args) -> str:
    peak, ceil = args.peak_tflops, res['matmul_tflops']
    lines = [
        f'### RSRefSeg on one device ({res["config"]})', '',
        f'{res["env"]}; random weights, {res["size"][0]}x{res["size"][1]} '
        f'inputs, bf16 autocast, {args.repeats} timed repeats after '
        f'{args.warmup} warm-up, medians; SDPA flash/efficient kernels '
        'enabled.'
    ]
    if ceil:
        lines.append(f'Dense bf16 matmul ceiling measured: {ceil:.0f} TFLOP/s')
    lines += [
        '', '| run | batch | images/s | median ms/batch | peak mem (GiB) | '
        f'GFLOPs/img counted | MFU counted / {peak:.0f} TFLOP/s | '
        f'GFLOPs/img nominal | MFU nominal / {peak:.0f} TFLOP/s | '
        'MFU nominal / measured ceiling |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    nominal = res.get('nominal_infer_flops')
    first = res['eager'][args.rel_pos_modes[0]]
    big = first['inference'][str(args.infer_batch)]
    counted_inf = sum(big['flops'].get(s, 0) for s in bm.STAGES) or None
    counted_train = None
    for r in (first.get('train') or {}).values():
        if r and r.get('flops_per_image'):
            counted_train = r['flops_per_image']

    def row(name, B, ips, lat, mem, design, counted):
        lines.append(
            f'| {name} | {B} | {ips:.1f} | {1e3 * lat["median"]:.1f} | '
            f'{mem / 2**30:.1f} | {bm.fmt_g(counted)} | '
            f'{pct(mfu(counted, ips, peak))} | {bm.fmt_g(design)} | '
            f'{pct(mfu(design, ips, peak))} | {pct(mfu(design, ips, ceil))} '
            '|')

    train_nominal = TRAIN_FACTOR * nominal if nominal else None
    for mode, run in res['eager'].items():
        for B, r in run['inference'].items():
            row(f'inference, eager, rel_pos_mode={mode}', B,
                r['images_per_s'], r['latency'], r['memory']['peak'],
                nominal, counted_inf)
        for cp, r in (run.get('train') or {}).items():
            name = f'LoRA train, eager, rel_pos_mode={mode}, with_cp={cp}'
            if r is None:
                lines.append(f'| {name} | {args.train_batch} | OOM | | | | |'
                             ' | | |')
                continue
            row(name, args.train_batch, r['images_per_s'], r['step'],
                r['memory']['peak'], train_nominal, counted_train)
    comp = res.get('compiled')
    if comp:
        r = comp['inference']
        row(f'inference, compiled {comp["kwargs"]}', args.infer_batch,
            r['images_per_s'], r['latency'], r['memory']['peak'], nominal,
            counted_inf)
        if 'train' in comp:
            r = comp['train']
            row(f'LoRA train, compiled {comp["kwargs"]}', args.train_batch,
                r['images_per_s'], r['step'], r['memory']['peak'],
                train_nominal, counted_train)
    lines += [
        '', f'Inference stages, eager, rel_pos_mode='
        f'{args.rel_pos_modes[0]}, batch {args.infer_batch} (synchronised '
        'at stage boundaries):', '',
        '| stage | median ms/batch | GFLOPs/image |', '| --- | --- | --- |'
    ]
    for s in bm.STAGES:
        lines.append(f'| {s} | {1e3 * big["stages"].get(s, 0):.1f} | '
                     f'{bm.fmt_g(big["flops"].get(s))} |')
    if comp:
        lines += [
            '', f'Compiled {comp["targets"]} with {comp["kwargs"]}: first '
            f'inference call {comp["compile_infer_s"]:.0f} s' +
            (f', first training step {comp["compile_train_s"]:.0f} s'
             if 'compile_train_s' in comp else '') + ' (compile time).'
        ]
    au = res.get('authors')
    if au:
        ours = {
            'eager': big['images_per_s'],
        }
        if comp:
            ours['compiled'] = comp['inference']['images_per_s']
        lines += [
            '', f"Authors' compute path (transformers SamVisionModel + "
            f"SiglipModel, SigLIP sizes '{au['siglip']}', random weights, "
            f'eager, {", ".join(au["attention"])}; '
            f'{au["params"]["sam"]:.1f} M + {au["params"]["siglip"]:.1f} M '
            f'parameters), inference batch {au["batch_size"]}: '
            f'{au["images_per_s"]:.1f} img/s, {1e3 * au["median_s"]:.1f} '
            f'ms/batch (SAM vision {1e3 * au["stages"]["SAM vision"]:.1f} '
            f'ms, SigLIP {1e3 * au["stages"]["SigLIP"]:.1f} ms).', ''
        ]
        for k, v in ours.items():
            lines.append(f'ours / theirs, inference, {k}: '
                         f'{v / au["images_per_s"]:.2f}x ({v:.1f} vs '
                         f'{au["images_per_s"]:.1f} img/s)')
    if 'max_batch' in res:
        mb = res['max_batch']
        lines += [
            '', f'Largest batch within {mb["memory_cap_gib"]:.0f} GiB '
            f'(eager, rel_pos_mode=auto): inference {mb.get("infer", "-")},'
            f' training {mb.get("train", "-")}.'
        ]
    if 'stock' in res:
        st = res['stock']
        lines += [
            '', f'SAM image encoder, batch {st["batch_size"]}, bf16:', '',
            '| encoder | median ms | speed-up | max abs diff |',
            '| --- | --- | --- | --- |'
        ]
        for k, m in st['medians'].items():
            lines.append(f'| {k} | {1e3 * m:.1f} | {st["speedup"][k]:.2f}x '
                         f'| {st["max_abs_diff"][k]:.1e} |')
    lines += [
        '', 'MFU = images/s x FLOPs/image / peak. Counted: FlopCounterMode '
        'over the executed ops (forward; forward + backward for training). '
        'Nominal (RSRefSeg-b at 1024 only): inference '
        f'{NOMINAL_INFER_GFLOPS} G/image (SAM ViT-B image encoder at 1024: '
        '972 G counted with FlopCounterMode; CLIP-B/16 towers taken as 28 '
        f'G); training {TRAIN_FACTOR} x that (forward + input and weight '
        'gradients of the trained parts; every tower is LoRA-tuned).',
        f'Total wall time {res["wall_s"]:.0f} s.', ''
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
