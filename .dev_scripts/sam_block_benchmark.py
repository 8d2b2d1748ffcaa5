# One SAM ViT block, path against path: time, copies, (N, N) tensors.
"""Benchmark single SAM image-encoder blocks, one implementation against
another, on random weights.

Variants (same weights, same input; repeats interleaved, medians):

* ``stock``: segment-anything's ``Block`` + ``Attention`` (materialised
  attention matrix);
* ``sdpa-stock-windows``: :class:`SAMFastAttention` in segment-anything's
  ``Block.forward`` (pad, partition, ``qkv`` on padded tokens, unpartition,
  crop): the path before :class:`SAMFastBlock`;
* ``sdpa-padded-qkv`` / ``sdpa-real-qkv``: :class:`SAMFastBlock` with
  ``window_qkv='padded'`` / ``'real'`` (windowed blocks on >= 1024-token
  grids: one-pass partition of the normalised tokens, or ``qkv`` on the
  real tokens and one-pass partition of its output; in-place unpartition +
  residual add). Global blocks: the same as ``sdpa-stock-windows``.

``--rel-pos-mode`` sets the attention's ``rel_pos_mode`` for the SDPA
variants (default: the per-device default). For each variant and pass
(``fwd``: no autograd; ``fwd+bwd``: forward and backward w.r.t. the input
and every parameter) the tool reports the median time, the bytes written
by copy-type ops (``aten::copy_``, ``constant_pad_nd``, ``clone``,
``_to_copy``, ``cat``) and the ops that wrote a tensor of at least
``B * heads * N * N / 2`` elements (an (N, N) attention matrix, mask or
gradient), counted in one extra untimed run with a ``TorchDispatchMode``.
``--profile`` adds a ``torch.profiler`` table of the top ops by self time.

Example (SAM ViT-B at 1024: 64 x 64 tokens, 14 x 14 windows)::

    python .dev_scripts/sam_block_benchmark.py --threads 1
"""
import argparse
import copy
import json
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

COPY_OPS = ('aten::copy_', 'aten::constant_pad_nd', 'aten::clone',
            'aten::_to_copy', 'aten::cat')
VARIANTS = ['stock', 'sdpa-stock-windows', 'sdpa-padded-qkv', 'sdpa-real-qkv']
VIEW_OPS = ('aten::view', 'aten::_unsafe_view', 'aten::reshape',
            'aten::expand', 'aten::alias', 'aten::as_strided')


def seq_axes(shape: Sequence[int], seq: int) -> int:
    """How many axes of ``shape`` index the ``seq`` tokens of an attention
    sequence: dims equal to ``seq`` plus adjacent pairs (h, w) of it."""
    n = sum(1 for d in shape if d == seq)
    n += sum(1 for a, b in zip(shape[:-1], shape[1:])
             if a > 1 and b > 1 and a * b == seq)
    return n


class OpRecorder(TorchDispatchMode):
    """Bytes written by copy-type ops, and ops that wrote (N, N) tensors.

    Args:
        seq (int): Tokens N of one attention sequence.
        big_numel (int): Element count from which an output with two token
            axes (an attention matrix, a mask or their gradients) is
            recorded in ``big`` (views excluded).
    """

    def __init__(self, seq: int, big_numel: int) -> None:
        super().__init__()
        self.seq, self.big_numel = seq, big_numel
        self.copy_bytes: Dict[str, int] = {}
        self.big: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        outs = out if isinstance(out, (tuple, list)) else [out]
        for t in outs:
            if not isinstance(t, torch.Tensor):
                continue
            if name in COPY_OPS:
                self.copy_bytes[name] = self.copy_bytes.get(name, 0) + \
                    t.numel() * t.element_size()
            if t.numel() >= self.big_numel and name not in VIEW_OPS and \
                    seq_axes(t.shape, self.seq) >= 2:
                self.big.append(name)
        return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dim', type=int, default=768)
    p.add_argument('--heads', type=int, default=12)
    p.add_argument('--grid', type=int, default=64, help='tokens per side')
    p.add_argument('--window', type=int, default=14)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument(
        '--blocks',
        nargs='+',
        default=['windowed', 'global'],
        choices=['windowed', 'global'])
    p.add_argument('--variants', nargs='+', default=VARIANTS, choices=VARIANTS)
    p.add_argument(
        '--passes',
        nargs='+',
        default=['fwd', 'fwd+bwd'],
        choices=['fwd', 'fwd+bwd'])
    p.add_argument(
        '--rel-pos-mode',
        default=None,
        choices=['mask', 'chunked', 'augmented'],
        help='rel_pos_mode of the SDPA variants (default: per device)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--bf16', action='store_true', help='bf16 autocast')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int)
    p.add_argument('--profile', action='store_true')
    p.add_argument('--json', help='write the results here')
    return p.parse_args(argv)


def build_blocks(args, window: int) -> Dict[str, nn.Module]:
    """The variants of one block, holding the same random weights."""
    from segment_anything.modeling.image_encoder import Block

    from rsrefseg_mm.models.sam.sam_fast_attention import enable_fast_attention
    torch.manual_seed(0)
    grid = (args.grid, args.grid)
    stock = Block(
        args.dim,
        args.heads,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=window,
        input_size=grid)
    for name, p in stock.named_parameters():
        if 'rel_pos' in name or name.endswith('bias'):
            nn.init.normal_(p, std=0.02)
    blocks = {}
    for name in args.variants:
        blk = copy.deepcopy(stock)
        if name != 'stock':
            enable_fast_attention(blk)
            if args.rel_pos_mode is not None:
                blk.attn.rel_pos_mode = args.rel_pos_mode
            if name == 'sdpa-stock-windows':
                blk.fused_window_min_tokens = sys.maxsize
            elif name == 'sdpa-real-qkv':
                blk.window_qkv = 'real'
            elif name == 'sdpa-padded-qkv':
                blk.window_qkv = 'padded'
        blocks[name] = blk.to(args.device)
    return blocks


def make_step(block: nn.Module, x: torch.Tensor, pass_: str,
              amp) -> Callable[[], None]:
    if pass_ == 'fwd':

        def step():
            with torch.no_grad(), amp():
                block(x)
    else:
        xg = x.detach().requires_grad_(True)

        def step():
            with amp():
                out = block(xg)
            out.float().square().mean().backward()
            block.zero_grad(set_to_none=True)
            xg.grad = None

    return step


def sync(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    amp = (lambda: torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16)) if args.bf16 \
        else nullcontext
    results = {}
    for kind in args.blocks:
        window = args.window if kind == 'windowed' else 0
        blocks = build_blocks(args, window)
        torch.manual_seed(1)
        x = torch.randn(
            args.batch, args.grid, args.grid, args.dim, device=device)
        seq = args.window**2 if window else args.grid**2
        seqs = args.batch * (-(-args.grid // args.window))**2 if window \
            else args.batch
        big = seqs * args.heads * seq * seq // 2
        for pass_ in args.passes:
            steps = {
                name: make_step(blk, x, pass_, amp)
                for name, blk in blocks.items()
            }
            row = {}
            for name, step in steps.items():
                if pass_ == 'fwd+bwd' and name != 'stock' and \
                        args.rel_pos_mode == 'chunked':
                    continue
                rec = OpRecorder(seq, big)
                with rec:
                    step()
                row[name] = dict(
                    copy_bytes=sum(rec.copy_bytes.values()),
                    copy_bytes_by_op=rec.copy_bytes,
                    big_ops=rec.big,
                    times=[],
                    cpu_times=[])
                for _ in range(args.warmup):
                    step()
            names = list(row)
            for r in range(args.repeats):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    steps[name]()
                    sync(device)
                    row[name]['times'].append(time.perf_counter() - t0)
                    row[name]['cpu_times'].append(time.process_time() - c0)
            for name in names:
                row[name]['median_s'] = statistics.median(row[name]['times'])
                row[name]['median_cpu_s'] = statistics.median(
                    row[name]['cpu_times'])
            if args.profile:
                for name in names:
                    from torch.profiler import ProfilerActivity, profile
                    acts = [ProfilerActivity.CPU]
                    if str(device).startswith('cuda'):
                        acts.append(ProfilerActivity.CUDA)
                    with profile(activities=acts) as prof:
                        steps[name]()
                        sync(device)
                    key = 'self_device_time_total' if len(acts) > 1 else \
                        'self_cpu_time_total'
                    row[name]['profile'] = prof.key_averages().table(
                        sort_by=key, row_limit=12)
            results[f'{kind} {pass_}'] = row
    return results


def report(results: dict, args) -> str:
    dev = torch.cuda.get_device_name() if str(
        args.device).startswith('cuda') else \
        f'cpu, {torch.get_num_threads()} threads'
    lines = [
        f'SAM block, dim {args.dim}, {args.heads} heads, '
        f'{args.grid}x{args.grid} tokens, window {args.window}, batch '
        f'{args.batch}, {"bf16 autocast" if args.bf16 else "fp32"}, '
        f'rel_pos_mode={args.rel_pos_mode!r}; torch {torch.__version__}, '
        f'{dev}; median of {args.repeats} interleaved repeats', '',
        '| block, pass | variant | median ms | median process CPU ms | '
        'MiB written by copy ops | ops writing (N, N) tensors |',
        '| --- | --- | --- | --- | --- | --- |'
    ]
    for key, row in results.items():
        for name, r in row.items():
            big = ', '.join(sorted(set(r['big_ops']))) or '-'
            lines.append(f'| {key} | {name} | {1e3 * r["median_s"]:.1f} | '
                         f'{1e3 * r["median_cpu_s"]:.1f} | '
                         f'{r["copy_bytes"] / 2**20:.1f} | {big} |')
    out = '\n'.join(lines)
    if args.profile:
        for key, row in results.items():
            for name, r in row.items():
                out += f'\n\n{key}, {name}:\n{r["profile"]}'
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(report(results, args))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                {
                    k: {
                        n: {kk: vv
                            for kk, vv in r.items() if kk != 'profile'}
                        for n, r in row.items()
                    }
                    for k, row in results.items()
                },
                f,
                indent=1)
    return results


if __name__ == '__main__':
    main()
