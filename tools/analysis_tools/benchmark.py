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

Example::

    python tools/analysis_tools/benchmark.py \\
        configs/rsrefseg/rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py \\
        --compare-stock --batch-size 1 --repeats 3
    python tools/analysis_tools/benchmark.py \
        configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py \
        --cfg-options model.backbone.tokenizer=work_dirs/spiece/spiece.model
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, List, Optional, Sequence

if os.environ.get('RSREFSEG_MMCV_OPS_SHIM') == '1':
    # GPU machines without a compiled mmcv: see mmcv_ops_shim.py
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    import mmcv_ops_shim  # noqa: E402

    mmcv_ops_shim.install()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

TEXTS = [
    'the large white storage tank at the lower left of the image',
    'a vehicle',
    'the baseball field next to the two tennis courts on the right',
    'the harbor in the middle',
]
STAGES = ('encoder towers', 'neck', 'SAM encoder', 'SAM prompt enc + decoder')


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
        help='bfloat16 autocast (inference) / AnyDeviceAmpOptimWrapper '
        '(training)')
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
        DictAction(option_strings=[], dest='cfg_options')(
            parser, opts, args.cfg_options)
        args.cfg_options = opts.cfg_options
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error('--batch-size and --repeats must be >= 1, --warmup >= 0')
    return args


# ------------------------------------------------------------------ model
def load_config(config: str, cfg_options: Optional[dict] = None):
    """Read a config, apply ``--cfg-options`` and clear pretrained paths."""
    from mmengine.config import Config

    from rsrefseg_mm.utils import drop_pretrained_checkpoints
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    drop_pretrained_checkpoints(cfg.model)
    return cfg


def build_model(cfg,
                device: str,
                checkpoint: Optional[str] = None,
                with_cp: Optional[bool] = None) -> torch.nn.Module:
    """Build ``cfg.model`` (SyncBN reverted to BN) on ``device``.

    Args:
        cfg (Config): From :func:`load_config`.
        device (str): ``'cpu'`` or ``'cuda'``.
        checkpoint (str, optional): Runner checkpoint to load.
        with_cp (bool, optional): Override ``decode_head.with_cp``.

    Returns:
        nn.Module: The segmentor in eval mode.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    if with_cp is not None:
        model_cfg.decode_head.with_cp = with_cp
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model = revert_sync_batchnorm(model)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def input_size(cfg, image_size: Optional[Sequence[int]]) -> tuple:
    """(H, W) from ``--image-size`` or the config's data preprocessor."""
    if image_size:
        return tuple(image_size)
    size = cfg.model.get('data_preprocessor', {}).get('size') or \
        cfg.get('crop_size')
    if size is None:
        raise ValueError('give --image-size: the config has no '
                         'data_preprocessor.size / crop_size')
    return tuple(size)


def make_samples(batch_size: int, size: tuple, device: str,
                 with_gt: bool = False) -> list:
    """Data samples with referring expressions (and a box mask as gt)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    samples = []
    for i in range(batch_size):
        ds = SegDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                pad_shape=(h, w),
                text=TEXTS[i % len(TEXTS)]))
        if with_gt:
            gt = torch.zeros(1, h, w, dtype=torch.long, device=device)
            gt[:, h // 4:h // 2, w // 3:w // 2] = 1
            ds.gt_sem_seg = PixelData(data=gt)
        samples.append(ds)
    return samples


# ------------------------------------------------------------------ timing
def synchronize(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def amp_context(device: str, enabled: bool):
    """bf16 autocast on ``device`` (a null context when disabled)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(
        device_type=torch.device(device).type, dtype=torch.bfloat16)


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape,
                            value_shape, *args, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                    value_shape)


def flop_counter() -> FlopCounterMode:
    """``FlopCounterMode`` that also counts the CPU flash-SDPA kernels.

    torch's registry covers the CUDA SDPA kernels only; on CPU
    ``F.scaled_dot_product_attention`` runs
    ``_scaled_dot_product_flash_attention_for_cpu``, which would count 0.
    """
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = \
            _sdpa_cpu_flop
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
            _sdpa_cpu_backward_flop
    return FlopCounterMode(display=False, custom_mapping=mapping)


class StageProbe:
    """Time (and FLOP-count) the stages of an RSRefSeg forward.

    Wraps, on the instances, ``backbone.forward``, ``neck.forward``,
    ``decode_head.forward`` and ``decode_head.encode_image``; the prompt
    encoder + mask decoder stage is the head minus its encoder. On CUDA each
    boundary is synchronised, which adds a few syncs per forward.

    Args:
        model (nn.Module): An ``RSRefSeg``.
        device (str): Device of the model.
    """

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        self.device = device
        self.times: Dict[str, List[float]] = {}
        self.flops: Dict[str, int] = {}
        self.counter: Optional[FlopCounterMode] = None
        self._restore = []
        head = model.decode_head
        for name, owner, attr in (('encoder towers', model.backbone, 'forward'),
                                  ('neck', model.neck, 'forward'),
                                  ('head', head, 'forward'),
                                  ('SAM encoder', head, 'encode_image')):
            fn = getattr(owner, attr)
            setattr(owner, attr, self._wrap(name, fn))
            self._restore.append((owner, attr))

    def _wrap(self, name: str, fn: Callable) -> Callable:

        def wrapped(*args, **kwargs):
            synchronize(self.device)
            f0 = self.counter.get_total_flops() if self.counter else 0
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(self.device)
            self._pending[name] = self._pending.get(name, 0.) + \
                time.perf_counter() - t0
            if self.counter:
                self.flops[name] = self.flops.get(name, 0) + \
                    self.counter.get_total_flops() - f0
            return out

        return wrapped

    @contextmanager
    def iteration(self):
        """Collect the stage times of one forward."""
        self._pending = {}
        yield
        head = self._pending.pop('head', 0.)
        self._pending['SAM prompt enc + decoder'] = head - self._pending.get(
            'SAM encoder', 0.)
        for k, v in self._pending.items():
            self.times.setdefault(k, []).append(v)

    def stage_flops(self) -> Dict[str, int]:
        out = dict(self.flops)
        if 'head' in out:
            out['SAM prompt enc + decoder'] = out.pop('head') - out.get(
                'SAM encoder', 0)
        return out

    def remove(self) -> None:
        for owner, attr in self._restore:
            owner.__dict__.pop(attr, None)


class PeakMemory:
    """Peak memory of a code region.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated
    when the region starts. CPU: the process's peak resident set size
    (``VmHWM``, reset through ``/proc/self/clear_refs`` when the kernel
    allows it, else ``ru_maxrss`` since process start) minus the RSS at the
    start of the region.
    """

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith('cuda')
        self.delta = self.peak = self.base = 0

    @staticmethod
    def _status_kib(key: str) -> Optional[int]:
        try:
            with open('/proc/self/status') as f:
                for line in f:
                    if line.startswith(key + ':'):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.reset_ok = False
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')  # reset the peak RSS (Linux >= 4.0)
                self.reset_ok = True
            except OSError:
                pass
            rss = self._status_kib('VmRSS')
            self.base = (rss or 0) * 1024
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            hwm = self._status_kib('VmHWM') if self.reset_ok else None
            if hwm is None:  # ru_maxrss is in KiB on Linux
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak = hwm * 1024
        self.delta = self.peak - self.base
        return False


def summarize(values: Sequence[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return dict(
        median=float(np.median(arr)),
        p90=float(np.percentile(arr, 90)),
        min=float(arr.min()),
        n=int(arr.size))


# ------------------------------------------------------------------ modes
def benchmark_inference(model, inputs, samples, device, amp, warmup, repeats,
                        count_flops=True) -> dict:
    """Time ``model(inputs, samples, mode='predict')``.

    Returns:
        dict: ``latency`` (s, summary over repeats), ``images_per_s``,
        ``stages`` (median s per stage), ``flops`` (per image per stage),
        ``memory`` (peak bytes over the timed repeats, and its delta).
    """
    probe = StageProbe(model, device)
    batch_size = inputs.shape[0]
    latencies = []

    def run_once():
        with torch.no_grad(), amp_context(device, amp):
            model(inputs, samples, mode='predict')

    try:
        for i in range(warmup):
            if i == 0 and count_flops:
                probe.counter = flop_counter()
                with probe.counter, probe.iteration():
                    run_once()
                probe.counter = None
            else:
                with probe.iteration():
                    run_once()
        if warmup == 0 and count_flops:  # count on an extra forward
            probe.counter = flop_counter()
            with probe.counter, probe.iteration():
                run_once()
            probe.counter = None
        probe.times.clear()
        with PeakMemory(device) as mem:
            for _ in range(repeats):
                synchronize(device)
                t0 = time.perf_counter()
                with probe.iteration():
                    run_once()
                synchronize(device)
                latencies.append(time.perf_counter() - t0)
    finally:
        probe.remove()
    lat = summarize(latencies)
    flops = {
        k: v / batch_size
        for k, v in probe.stage_flops().items()
    }
    return dict(
        latency=lat,
        images_per_s=batch_size / lat['median'],
        stages={k: float(np.median(v))
                for k, v in probe.times.items()},
        flops=flops,
        memory=dict(peak=mem.peak, delta=mem.delta))


def merged_sam_state_dict(encoder: torch.nn.Module) -> dict:
    """State dict of a (LoRA-wrapped) SAM encoder in stock layout.

    Each ``LoRALinear`` is merged: ``W = W0 + (alpha / r) * B @ A``.
    """
    from mmpretrain.models.peft.lora import LoRALinear
    state = {}
    lora_prefixes = []
    for name, m in encoder.named_modules():
        if isinstance(m, LoRALinear):
            base = m.original_layer
            delta = m.lora_up.weight @ m.lora_down.weight * m.scaling
            state[f'{name}.weight'] = base.weight.detach() + delta.detach()
            if base.bias is not None:
                state[f'{name}.bias'] = base.bias.detach()
            lora_prefixes.append(name + '.')
    for k, v in encoder.state_dict().items():
        if not any(k.startswith(p) for p in lora_prefixes):
            state[k] = v
    return state


def benchmark_stock(model, images, device, amp, warmup, repeats) -> dict:
    """SAM image encoder vs stock segment-anything on the same input.

    Three encoders hold the same function: ``stock`` (segment-anything's
    ``ImageEncoderViT``, LoRA merged into its weights), ``stock+sdpa``
    (the same module with only the attention swapped to
    :class:`SAMFastAttention`) and ``ours`` (the encoder as configured:
    fast attention and unmerged LoRA layers; omitted when it has no LoRA).
    Repeats are interleaved, rotating the order.
    """
    from rsrefseg_mm.models.utils.sam_builder import build_sam_modules
    from rsrefseg_mm.models.utils.sam_fast_attention import \
        enable_fast_attention
    from rsrefseg_mm.models.utils.tuning import LoRALinear
    head = model.decode_head
    ours = head.image_encoder
    state = merged_sam_state_dict(ours)
    stock = build_sam_modules(head.sam_arch)['image_encoder']
    stock.load_state_dict(state)
    stock = stock.to(device).eval()
    sdpa = copy.deepcopy(stock)
    enable_fast_attention(sdpa)
    encoders = {'stock': stock, 'stock+sdpa': sdpa}
    if any(isinstance(m, LoRALinear) for m in ours.modules()):
        encoders['ours'] = ours
    with torch.no_grad():
        x = head.preprocess(images)
    times = {k: [] for k in encoders}
    cpu_times = {k: [] for k in encoders}
    outputs = {}
    names = list(encoders)
    with torch.no_grad(), amp_context(device, amp):
        for name in names:
            for _ in range(warmup):
                outputs[name] = encoders[name](x).float()
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                synchronize(device)
                t0, c0 = time.perf_counter(), time.process_time()
                out = encoders[name](x)
                synchronize(device)
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
                outputs[name] = out.float()
    ref = outputs['stock']
    diffs = {k: float((v - ref).abs().max()) for k, v in outputs.items()}
    medians = {k: float(np.median(v)) for k, v in times.items()}
    mins = {k: float(np.min(v)) for k, v in times.items()}
    cpu = {k: float(np.median(v)) for k, v in cpu_times.items()}
    return dict(
        times=times,
        cpu_times=cpu_times,
        cpu_medians=cpu,
        speedup_cpu={k: cpu['stock'] / v
                     for k, v in cpu.items()},
        medians=medians,
        mins=mins,
        speedup={k: medians['stock'] / v
                 for k, v in medians.items()},
        speedup_min={k: mins['stock'] / v
                     for k, v in mins.items()},
        max_abs_diff=diffs,
        ref_abs_max=float(ref.abs().max()),
        batch_size=int(x.shape[0]),
        input_shape=list(x.shape))


def build_optim_wrapper(model, cfg, amp: bool):
    """AdamW of the config (fallback lr 1e-4, wd 0.05), bf16 when ``amp``."""
    from mmengine.optim import build_optim_wrapper as _build
    optimizer = copy.deepcopy(
        cfg.get('optim_wrapper', {}).get(
            'optimizer', dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    ow = dict(optimizer=optimizer)
    if amp:
        ow.update(type='AnyDeviceAmpOptimWrapper', dtype='bfloat16')
    else:
        ow.update(type='OptimWrapper')
    return _build(model, ow)


def benchmark_train_steps(model, cfg, size, batch_size, device, amp, warmup,
                          repeats, count_flops=True) -> dict:
    """Time ``model.train_step`` (data preprocessor, loss, backward, AdamW).

    Returns:
        dict: ``step`` (s summary), ``images_per_s``, ``flops_per_image``
        (forward + backward, counted on the first warm-up step; None when
        not counted), ``forward_flops`` (the loss forward alone, counted
        right after), ``memory`` (peak over the timed steps).
    """
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg, amp)
    h, w = size
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                          generator=g).to(device) for _ in range(batch_size)
        ],
        data_samples=make_samples(batch_size, size, device, with_gt=True))
    flops = forward_flops = None
    for i in range(warmup):
        if i == 0 and count_flops:
            with flop_counter() as fc:
                model.train_step(data, optim_wrapper)
            flops = fc.get_total_flops() / batch_size
            with flop_counter() as fc, torch.no_grad(), \
                    optim_wrapper.optim_context(model):
                model(**model.data_preprocessor(data, True), mode='loss')
            forward_flops = fc.get_total_flops() / batch_size
        else:
            model.train_step(data, optim_wrapper)
    steps = []
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            log_vars = model.train_step(data, optim_wrapper)
            synchronize(device)
            steps.append(time.perf_counter() - t0)
    loss = float(torch.as_tensor(log_vars['loss']).detach())
    stats = summarize(steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(
        step=stats,
        images_per_s=batch_size / stats['median'],
        flops_per_image=flops,
        forward_flops=forward_flops,
        memory=dict(peak=mem.peak, delta=mem.delta),
        loss=loss,
        trainable_params=trainable)


# ------------------------------------------------------------------ output
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
          f'{"bf16 (AnyDeviceAmpOptimWrapper)" if args.amp else "fp32"}, '
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


# ------------------------------------------------------------------ main
def train_worker(args) -> dict:
    """One --train measurement (run in a subprocess by :func:`main`)."""
    cfg = load_config(args.config, args.cfg_options)
    size = input_size(cfg, args.image_size)
    with_cp = args.with_cp == 'on'
    model = build_model(cfg, args.device, args.checkpoint, with_cp=with_cp)
    res = benchmark_train_steps(model, cfg, size, args.batch_size,
                                args.device, args.amp, args.warmup,
                                args.repeats, not args.no_flops)
    res.update(
        with_cp=with_cp,
        with_cp_model=bool(model.decode_head.with_cp),
        mmcv_ops_shim=bool(
            getattr(sys.modules.get('mmcv.ops'), '__shim__', False)),
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
        cmd = [sys.executable, osp.abspath(__file__), *base, '--worker',
               '--with-cp', cp_setting]
        print(f'[benchmark] with_cp={cp_setting}: {" ".join(cmd)}',
              flush=True)
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
    else:
        cfg = load_config(args.config, args.cfg_options)
        size = input_size(cfg, args.image_size)
        model = build_model(cfg, args.device, args.checkpoint)
        torch.manual_seed(0)
        images = torch.rand(
            args.batch_size, 3, *size, device=args.device) * 255
        samples = make_samples(args.batch_size, size, args.device)
        if not (args.compare_stock and args.stock_only):
            out['inference'] = benchmark_inference(
                model, images, samples, args.device, args.amp, args.warmup,
                args.repeats, not args.no_flops)
            print_inference(out['inference'], args, size)
        if args.compare_stock:
            out['stock'] = benchmark_stock(model, images, args.device,
                                           args.amp, args.warmup,
                                           args.repeats)
            print_stock(out['stock'], args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == '__main__':
    main()
