# RSRefSeg-b throughput and MFU on one GPU (bf16). Run through
# gpu_benchmark.sh on a machine that gets the OpenMMLab stack as gpu_site/.
"""RSRefSeg-b on one GPU: inference and LoRA training throughput, MFU.

Steps (random weights, inputs at 1024x1024, bf16 autocast, CUDA-synchronised
timing, medians over repeats after warm-up):

1. dense bf16 matmul ceiling (8192^3, measured);
2. inference ``mode='predict'`` at ``--infer-batch`` (and batch 1 latency),
   with a per-stage split and FLOPs counted by ``FlopCounterMode``;
3. LoRA training steps (``model.train_step``: data preprocessor, loss,
   backward, AdamW through ``AnyDeviceAmpOptimWrapper``) at
   ``--train-batch``, SAM encoder activation checkpointing off and on;
4. SAM ViT-B image encoder: stock segment-anything vs SDPA attention;
5. optional ``torch.compile`` of the SAM image encoder (``--compile``).

MFU = achieved FLOP/s / peak. Model FLOPs per image: inference 972 G (SAM
ViT-B image encoder at 1024, counted with ``FlopCounterMode`` on
segment-anything's encoder) + 28 G allotted to CLIP ViT-B/16 (counted:
35.1 G image tower at 224 + 6.0 G text tower; the 1000 G reference is kept
so that MFU figures stay comparable) = 1000 G; a training step costs ~3x the forward FLOPs of the trained parts
(forward + input gradients + weight gradients); in RSRefSeg-b every tower is
LoRA-tuned, so 3 x 1000 = 3000 G per image. The FLOPs actually executed
(counted) are reported too: with LoRA the frozen base weights get no weight
gradient, so a step executes ~2x forward. Peak: ``--peak-tflops`` (989.4 =
H100/H200 SXM dense bf16 spec) and the measured matmul ceiling.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark as bm  # noqa: E402  (installs the mmcv.ops shim if asked)

import torch  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    ROOT, 'configs', 'rsrefseg',
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py')
DESIGN_INFER_GFLOPS = 972 + 28  # SAM-B encoder (counted) + CLIP-B share
TRAIN_FACTOR = 3  # fwd + dgrad + wgrad of the trained (LoRA) parts


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=CONFIG)
    p.add_argument('--infer-batch', type=int, default=16)
    p.add_argument('--train-batch', type=int, default=8)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--peak-tflops', type=float, default=989.4)
    p.add_argument('--compile', action='store_true',
                   help='also time torch.compile of the SAM image encoder')
    p.add_argument(
        '--rel-pos-mode',
        default='auto',
        choices=['auto', 'mask', 'chunked', 'augmented'],
        help="SAMFastAttention.rel_pos_mode ('auto' = the config's; "
        "'chunked' is inference-only, use with --skip-train)")
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--skip-stock', action='store_true')
    p.add_argument('--device', default='cuda')
    p.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu'))
    return p.parse_args()


def log(msg):
    print(f'[gpu_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def matmul_ceiling(device, n=8192, iters=20):
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
    if not flops_per_image:
        return None
    return flops_per_image * images_per_s / (peak_tflops * 1e12)


def pct(x):
    return '-' if x is None else f'{100 * x:.1f} %'


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = args.device
    if not torch.cuda.is_available() and dev.startswith('cuda'):
        raise SystemExit('CUDA is not available')
    if dev.startswith('cuda'):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)
    t_start = time.perf_counter()
    res = dict(env=bm.env_line(dev), config=osp.basename(args.config))
    if dev.startswith('cuda'):
        res['sdp'] = dict(
            flash=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            math=torch.backends.cuda.math_sdp_enabled())
    log(res['env'])

    res['matmul_tflops'] = matmul_ceiling(dev) if dev.startswith('cuda') \
        else None
    log(f'bf16 matmul ceiling: {res["matmul_tflops"]} TFLOP/s')

    cfg = bm.load_config(args.config)
    if args.rel_pos_mode != 'auto':
        cfg.model.decode_head.rel_pos_mode = args.rel_pos_mode
    res['rel_pos_mode'] = cfg.model.decode_head.get('rel_pos_mode')
    size = bm.input_size(cfg, None)
    res['size'] = list(size)
    model = bm.build_model(cfg, dev)
    log('model built')

    # ---- inference
    infer = {}
    for B in sorted({1, args.infer_batch}):
        torch.manual_seed(0)
        images = torch.rand(B, 3, *size, device=dev) * 255
        samples = bm.make_samples(B, size, dev)
        infer[B] = bm.benchmark_inference(
            model, images, samples, dev, True, args.warmup, args.repeats,
            count_flops=(B == args.infer_batch))
        log(f'inference batch {B}: {infer[B]["images_per_s"]:.1f} img/s')
        del images
    res['inference'] = {str(k): v for k, v in infer.items()}

    # ---- training
    train = {}
    if not args.skip_train:
        for with_cp in (False, True):
            model.decode_head.with_cp = with_cp
            torch.cuda.empty_cache() if dev.startswith('cuda') else None
            try:
                train[with_cp] = bm.benchmark_train_steps(
                    model, cfg, size, args.train_batch, dev, True,
                    args.warmup, args.repeats, count_flops=not with_cp)
                log(f'train with_cp={with_cp}: '
                    f'{train[with_cp]["images_per_s"]:.1f} img/s')
            except torch.cuda.OutOfMemoryError as e:  # report, go on
                log(f'train with_cp={with_cp}: out of memory ({e})')
                train[with_cp] = None
        model.decode_head.with_cp = False
        model.eval()
    res['train'] = {str(k): v for k, v in train.items()}

    # ---- SAM encoder: stock vs SDPA
    if not args.skip_stock:
        torch.manual_seed(0)
        images = torch.rand(4, 3, *size, device=dev) * 255
        res['stock'] = bm.benchmark_stock(model, images, dev, True,
                                          args.warmup, args.repeats)
        log(f'SAM encoder stock/sdpa: {res["stock"]["speedup"]}')

    # ---- optional torch.compile of the SAM encoder
    if args.compile:
        enc = model.decode_head.image_encoder
        compiled = torch.compile(enc)
        torch.manual_seed(0)
        x = model.decode_head.preprocess(
            torch.rand(args.infer_batch, 3, *size, device=dev) * 255)
        times = {}
        with torch.no_grad(), bm.amp_context(dev, True):
            t0 = time.perf_counter()
            compiled(x)
            bm.synchronize(dev)
            res['compile_s'] = time.perf_counter() - t0
            for name, fn in (('eager', enc), ('compiled', compiled)):
                for _ in range(args.warmup):
                    fn(x)
                ts = []
                for _ in range(args.repeats):
                    bm.synchronize(dev)
                    t0 = time.perf_counter()
                    fn(x)
                    bm.synchronize(dev)
                    ts.append(time.perf_counter() - t0)
                times[name] = sorted(ts)[len(ts) // 2]
        res['compile'] = times
        log(f'torch.compile SAM encoder: {times}')

    res['wall_s'] = time.perf_counter() - t_start
    text = report(res, args)
    print(text)
    with open(osp.join(args.out, 'gpu_benchmark.md'), 'w') as f:
        f.write(text)
    with open(osp.join(args.out, 'gpu_benchmark.json'), 'w') as f:
        json.dump(res, f, indent=1, default=str)


def report(res, args):
    peak = args.peak_tflops
    ceil = res['matmul_tflops']
    lines = [
        f'### RSRefSeg-b on one GPU ({res["config"]})', '',
        f'{res["env"]}; random weights, {res["size"][0]}x{res["size"][1]} '
        'inputs, bf16 autocast, '
        f'{args.repeats} timed repeats after {args.warmup} warm-up, '
        'medians; SDPA flash/efficient kernels enabled; SAM '
        f'rel_pos_mode={res.get("rel_pos_mode")!r} (None: per device).',
        f'Dense bf16 matmul ceiling measured: '
        f'{ceil:.0f} TFLOP/s' if ceil else '', '',
        '| run | batch | images/s | median ms/batch | p90 ms/batch | '
        'peak mem (GiB) | GFLOPs/img design | GFLOPs/img counted | '
        f'MFU design / {peak:.0f} TFLOP/s | MFU design / measured ceiling | '
        f'MFU counted / {peak:.0f} TFLOP/s |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]

    def row(name, B, ips, lat, mem, design, counted):
        lines.append(
            f'| {name} | {B} | {ips:.1f} | {1e3 * lat["median"]:.1f} | '
            f'{1e3 * lat["p90"]:.1f} | {mem / 2**30:.1f} | '
            f'{design / 1e9:,.0f} | '
            f'{"-" if not counted else f"{counted / 1e9:,.0f}"} | '
            f'{pct(mfu(design, ips, peak))} | '
            f'{pct(mfu(design, ips, ceil)) if ceil else "-"} | '
            f'{pct(mfu(counted, ips, peak))} |')

    design_inf = DESIGN_INFER_GFLOPS * 1e9
    big = res['inference'][str(args.infer_batch)]
    # FLOPs per image do not depend on the batch: counted at the big one
    counted_inf = sum(big['flops'].get(s, 0) for s in bm.STAGES) or None
    for B, r in res['inference'].items():
        row('inference', B, r['images_per_s'], r['latency'],
            r['memory']['peak'], design_inf, counted_inf)
    for cp, r in res.get('train', {}).items():
        if r is None:
            lines.append(f'| train LoRA, with_cp={cp} | {args.train_batch} '
                         '| OOM | | | | | | | | |')
            continue
        counted = r['flops_per_image'] or res['train'].get(
            'False', {}).get('flops_per_image')
        row(f'train LoRA, with_cp={cp}', args.train_batch,
            r['images_per_s'], r['step'], r['memory']['peak'],
            TRAIN_FACTOR * design_inf, counted)
    lines += [
        '', f'Inference stages at batch {args.infer_batch} (synchronised '
        'at stage boundaries):', '',
        '| stage | median ms/batch | GFLOPs/image |', '| --- | --- | --- |'
    ]
    for s in bm.STAGES:
        lines.append(f'| {s} | {1e3 * big["stages"].get(s, 0):.1f} | '
                     f'{bm.fmt_g(big["flops"].get(s))} |')
    if 'stock' in res:
        st = res['stock']
        lines += [
            '', f'SAM ViT-B image encoder, batch {st["batch_size"]}, bf16:',
            '', '| encoder | median ms | speed-up | max abs diff |',
            '| --- | --- | --- | --- |'
        ]
        for k, m in st['medians'].items():
            lines.append(f'| {k} | {1e3 * m:.1f} | {st["speedup"][k]:.2f}x '
                         f'| {st["max_abs_diff"][k]:.1e} |')
    if 'compile' in res:
        c = res['compile']
        lines += [
            '', f'torch.compile SAM encoder (batch {args.infer_batch}): '
            f'eager {1e3 * c["eager"]:.1f} ms, compiled '
            f'{1e3 * c["compiled"]:.1f} ms (compile {res["compile_s"]:.0f} s)'
        ]
    lines += [
        '', 'MFU = images/s x FLOPs/image / peak. Model FLOPs: inference '
        f'{DESIGN_INFER_GFLOPS} G/image (SAM-B encoder 972 G, counted with '
        f'FlopCounterMode, + 28 G allotted to CLIP-B); training '
        f'{TRAIN_FACTOR} x that (forward + '
        'input and weight gradients of the trained parts; every tower is '
        'LoRA-tuned). Counted: FlopCounterMode over the executed ops '
        '(forward; forward + backward for training).',
        f'Total wall time {res["wall_s"]:.0f} s.', ''
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
