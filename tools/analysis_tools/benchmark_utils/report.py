"""Markdown tables printed by ``benchmark.py``."""
import os
import os.path as osp
import platform
from typing import List, Optional

import torch

from .measure import STAGES


def fmt_bytes(n: float) -> str:
    return f'{n / 2**20:,.0f} MiB'


def fmt_g(flops: Optional[float]) -> str:
    if flops is None:
        return '-'
    g = flops / 1e9
    return f'{g:,.1f}' if abs(g) >= 10 else f'{g:.3g}'


def env_line(device: str) -> str:
    if str(device).startswith('cuda'):
        dev = torch.cuda.get_device_name()
    else:
        dev = f'{platform.processor() or platform.machine()}, ' \
              f'{torch.get_num_threads()} threads'
        # the allocator decides how often big tensors are page-faulted in,
        # which dominates stock SAM's time on some machines: print it
        alloc = [
            f'{k}={v}' for k, v in sorted(os.environ.items())
            if k.startswith('MALLOC_') or k == 'LD_PRELOAD'
        ]
        dev += ', allocator: ' + (' '.join(alloc) or 'default')
    return f'torch {torch.__version__}, {device} ({dev})'


def print_inference(res: dict, args, size) -> None:
    lat = res['latency']
    print(f'\n### Inference: {osp.basename(args.config)}\n')
    print(f'{env_line(args.device)}; batch {args.batch_size}, input '
          f'{size[0]}x{size[1]}, {"bf16 autocast" if args.amp else "fp32"}, '
          f'{lat["n"]} timed repeats after {args.warmup} warm-up\n')
    print('| metric | value |\n| --- | --- |')
    print(f'| images/s | {res["images_per_s"]:.3f} |')
    print(f'| latency median (s/batch) | {lat["median"]:.3f} |')
    print(f'| latency p90 (s/batch) | {lat["p90"]:.3f} |')
    kind = 'max allocated' if args.device.startswith('cuda') else 'max RSS'
    print(f'| peak memory ({kind}) | {fmt_bytes(res["memory"]["peak"])} '
          f'(+{fmt_bytes(res["memory"]["delta"])} over the loaded model) |')
    print('\n| stage | median s/batch | share | GFLOPs/image |')
    print('| --- | --- | --- | --- |')
    total = sum(res['stages'].get(s, 0.) for s in STAGES)
    for s in STAGES:
        t = res['stages'].get(s, 0.)
        print(f'| {s} | {t:.3f} | {100 * t / max(total, 1e-12):.1f} % | '
              f'{fmt_g(res["flops"].get(s))} |')
    total_flops = sum(res['flops'].get(s, 0) for s in STAGES) \
        if res['flops'] else None
    print(f'| **total** | {total:.3f} | 100 % | {fmt_g(total_flops)} |')


def print_stock(res: dict, args) -> None:
    print('\n### SAM image encoder: stock segment-anything vs ours\n')
    print(f'{env_line(args.device)}; input {tuple(res["input_shape"])}, '
          f'{"bf16 autocast" if args.amp else "fp32"}, '
          f'{len(res["times"]["stock"])} interleaved repeats\n')
    print('| encoder | median s | min s | all runs (s) | speed-up vs stock '
          '(medians) | (mins) | max abs diff vs stock |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    labels = {
        'stock': 'stock `ImageEncoderViT`',
        'stock+sdpa': 'stock + SDPA attention (same weights)',
        'ours': 'ours as configured (SDPA + LoRA layers)',
    }
    for k, med in res['medians'].items():
        runs = ', '.join(f'{t:.2f}' for t in res['times'][k])
        print(f'| {labels[k]} | {med:.3f} | {res["mins"][k]:.3f} | {runs} | '
              f'{res["speedup"][k]:.2f}x | {res["speedup_min"][k]:.2f}x | '
              f'{res["max_abs_diff"][k]:.1e} |')
    print(f'\n(outputs of magnitude up to {res["ref_abs_max"]:.2f})')
    if not args.device.startswith('cuda'):
        # process CPU time barely moves when other jobs share the cores
        print('\n| encoder | median process CPU s | speed-up vs stock |')
        print('| --- | --- | --- |')
        for k, c in res['cpu_medians'].items():
            print(f'| {labels[k]} | {c:.2f} | {res["speedup_cpu"][k]:.2f}x |')


def print_train(results: List[dict], args) -> None:
    print(f'\n### Training step: {osp.basename(args.config)}\n')
    r0 = results[0]
    print(f'{r0["env"]}; batch {args.batch_size}, input '
          f'{r0["size"][0]}x{r0["size"][1]}, '
          f'{"bf16 (SkipNonFiniteAmpOptimWrapper)" if args.amp else "fp32"}, '
          f'{r0["step"]["n"]} timed step(s) after {args.warmup} warm-up, '
          f'{r0["trainable_params"] / 1e6:.2f} M trainable parameters; '
          'one subprocess per row\n')
    kind = 'max allocated' if r0['cuda'] else 'max RSS'
    print(f'| SAM encoder with_cp | step median (s) | images/s | peak '
          f'memory ({kind}) | over the loaded model | GFLOPs/image (fwd+bwd)'
          ' |')
    print('| --- | --- | --- | --- | --- | --- |')
    for r in results:
        print(f'| {r["with_cp"]} | {r["step"]["median"]:.2f} | '
              f'{r["images_per_s"]:.3f} | {fmt_bytes(r["memory"]["peak"])} | '
              f'{fmt_bytes(r["memory"]["delta"])} | '
              f'{fmt_g(r["flops_per_image"])} |')
    by_cp = {r['with_cp']: r for r in results}
    if True in by_cp and False in by_cp:
        off, on = by_cp[False], by_cp[True]
        saved = 1 - on['memory']['delta'] / max(off['memory']['delta'], 1)
        print(f'\nwith_cp=True: peak {fmt_bytes(on["memory"]["peak"])} vs '
              f'{fmt_bytes(off["memory"]["peak"])} '
              f'({100 * saved:.0f} % less activation memory), step time x'
              f'{on["step"]["median"] / off["step"]["median"]:.2f}')
