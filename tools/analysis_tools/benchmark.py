# Benchmark an RSRefSeg config: throughput, encode-once latency, ONNX
# Runtime against PyTorch, memory and accuracy on large GeoTIFF scenes.
"""Benchmark an RSRefSeg config on random inputs, one mode per call.

Every mode prints Markdown tables of medians under a line naming the
context (torch version, CPU or GPU, threads, date):

* ``throughput``: images/s of the model forward (``mode='predict'``, the
  ``tools/test.py`` path) at the config's input size and ``--batch-size``:
  latency median / p90, peak memory, GFLOPs per image and the time and
  FLOPs of each stage (encoder towers, prompter, SAM image encoder, SAM
  prompt encoder + mask decoder); ``--train`` times ``model.train_step``
  (data preprocessor, loss, backward, optimizer step) instead;
* ``encode-once``: :class:`~rsrefseg_mm.apis.ReferringPredictor` on one
  image: the first expression (image encoded), a follow-up expression, an
  image found in the predictor's cache, and K expressions against K
  one-pass forwards;
* ``onnx``: ``ReferringPredictor`` against
  :class:`~rsrefseg_deploy.OnnxReferringPredictor` on the same image and
  expressions (the model is exported to ``--model-dir`` when that has no
  ``deploy.json``): first and follow-up latency, the largest difference of
  their probabilities and the share of mask pixels that differ;
* ``precision``: the predictors at fp32 and bf16 (PyTorch autocast, on
  CPUs with native bf16) and ONNX Runtime at fp32 and int8 (dynamic
  quantization, ``export_onnx.py --quantize int8``) on one window, the
  runtimes interleaved: first query, windows/s (image encoding), follow-up,
  the largest logit difference and mask pixels differing from the same
  runtime's fp32, the oneDNN kernels of bf16 and, with
  ``--quality-samples``, mIoU on the config's test split;
* ``scene-memory``: the demo's work (load the model, read + encode,
  predict, save the outputs) on large synthetic 4-band uint16 GeoTIFFs, one
  fresh process per run: time and peak resident memory, the scene sizes
  side by side;
* ``scene``: referring on large synthetic scenes of the demo's shapes
  (:mod:`rsrefseg_mm.datasets.synthetic_large_scene`), a decimated
  whole-image read against sliding windows
  (:class:`~rsrefseg_core.scene.ScenePredictor`), one fresh process per
  method and size: hit rate (IoU >= 0.5) of one-referent and
  several-referent expressions, empty masks on no-target ones, gIoU, peak
  RSS, windows/s and the cost of a follow-up expression, with the goals
  they are read against; ``--model-dir`` adds sliding windows through
  :class:`~rsrefseg_deploy.OnnxReferringPredictor` (``slide-onnx``; the
  model is exported there when the folder has no ``deploy.json``), and
  ``--methods`` picks the methods.

Weights are random (the config's pretrained paths are cleared, nothing is
downloaded) unless ``--checkpoint`` gives a runner checkpoint. SigLIP
configs need a ``spiece.model`` (the SigLIP folder's, or one written by
``tools/misc/train_spiece.py``): ``--cfg-options
model.backbone.tokenizer=PATH``. FLOPs come from torch's
``FlopCounterMode`` (one multiply-add = 2 FLOPs) on the first warm-up run.

Examples (see docs/benchmark.md)::

    CFG=configs/rsrefseg/rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py
    python tools/analysis_tools/benchmark.py throughput $CFG --threads 2
    python tools/analysis_tools/benchmark.py throughput $CFG --device cuda \\
        --bf16 --batch-size 32 [--train]
    python tools/analysis_tools/benchmark.py encode-once $CFG --expressions 8
    python tools/analysis_tools/benchmark.py onnx $CFG --model-dir DIR
    python tools/analysis_tools/benchmark.py precision $CFG --threads 2 \
        --model-dir DIR --int8-dir DIR_INT8
    python tools/analysis_tools/benchmark.py scene-memory TINY_CONFIG \\
        --sizes 8192 16384
    python tools/analysis_tools/benchmark.py scene GRES_TINY_CONFIG \\
        --checkpoint CKPT --sizes 1024 2048 --scenes 5
    python tools/analysis_tools/benchmark.py scene $CFG --sizes 1400 \\
        --scenes 1 --methods slide slide-onnx --model-dir DIR --threads 2
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rsrefseg_core.scene import DEFAULT_MEMORY_LIMIT

TEXTS = ('the large white storage tank at the lower left of the image',
         'a vehicle',
         'the baseball field next to the two tennis courts on the right',
         'the harbor in the middle')
STAGES = ('encoder towers', 'prompter', 'SAM image encoder',
          'SAM prompt encoder + mask decoder')
MIB = 2**20


# --------------------------------------------------------------- context
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``; the architecture elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def context(device: str = 'cpu') -> str:
    """torch version, CPU or GPU, threads, allocator settings and date."""
    if str(device).startswith('cuda'):
        hw = f'GPU {torch.cuda.get_device_name(device)} (CUDA ' \
             f'{torch.version.cuda})'
    else:
        hw = f'CPU {cpu_name()}'
    # the allocator decides how often big tensors are page-faulted in
    alloc = ' '.join(f'{k}={v}' for k, v in sorted(os.environ.items())
                     if k.startswith('MALLOC_') or k == 'LD_PRELOAD')
    return (f'torch {torch.__version__}, {hw}, threads: '
            f'{torch.get_num_threads()}, allocator: {alloc or "default"}, '
            f'{time.strftime("%Y-%m-%d")}')


def fmt(value) -> str:
    """A table cell: numbers with 4 significant digits (thousands
    separated), anything else as text."""
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f'{value:,.0f}'
    return f'{value:.4g}'


def print_table(header: Sequence[str], rows: Sequence[Sequence]) -> None:
    print('| ' + ' | '.join(header) + ' |')
    print('|' + ' --- |' * len(header))
    for row in rows:
        print('| ' + ' | '.join(fmt(v) for v in row) + ' |')
    print()


# ------------------------------------------------------------- measuring
def synchronize(device: str) -> None:
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable) -> float:
    """Seconds ``fn()`` takes (CUDA-synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """``median``, ``p90`` and ``n`` of a list of measurements."""
    arr = np.asarray(values, dtype=np.float64)
    return dict(
        median=float(np.median(arr)),
        p90=float(np.percentile(arr, 90)),
        n=int(arr.size))


def autocast(device: str, enabled: bool):
    """bf16 autocast on ``device`` (a null context when disabled)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-SDPA kernels
    (torch registers the CUDA ones only; the CPU ones would count 0)."""
    from torch.utils.flop_counter import (FlopCounterMode,
                                          sdpa_backward_flop_count,
                                          sdpa_flop_count)
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = \
            lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] \
            = lambda g, q, k, v, *args, **kwargs: \
            sdpa_backward_flop_count(g, q, k, v)
    return FlopCounterMode(display=False, custom_mapping=mapping)


class PeakMemory:
    """Peak memory of a code region, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the peak resident set
    size (``VmHWM``, reset through ``/proc/self/clear_refs`` where the
    kernel allows it, else ``ru_maxrss`` since the process started).
    ``delta`` is the peak minus the memory when the region started.
    """

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith('cuda')
        self.peak = self.delta = self.base = 0
        self.reset = False

    def __enter__(self) -> 'PeakMemory':
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # resets VmHWM (Linux >= 4.0)
            self.reset = True
        except OSError:
            pass
        self.base = int((proc_status_mib('self', 'VmRSS') or 0) * MIB)
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            hwm = proc_status_mib('self', 'VmHWM') if self.reset else None
            self.peak = int(hwm * MIB) if hwm is not None else \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.delta = self.peak - self.base


def proc_status_mib(pid: object, key: str) -> Optional[float]:
    """A memory figure of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in
    MiB; None once the process is gone or without ``/proc``."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class StageProbe:
    """Time (and count the FLOPs of) the stages of RSRefSeg forwards.

    Wraps, on the instances, the towers' ``encode_image`` and
    ``encode_text`` (together: encoder towers), ``neck.forward``
    (prompter), ``decode_head.encode_image`` (SAM image encoder,
    preprocessing included) and ``decode_head.forward``; prompt encoder +
    mask decoder = head minus its image encoder. On CUDA every stage
    boundary is synchronised.

    Args:
        model (nn.Module): An ``RSRefSeg``.
        device (str): Its device.
    """
    #: ``part.method`` of the model -> the stage it is timed in
    WRAPS = {
        'backbone.encode_image': 'encoder towers',
        'backbone.encode_text': 'encoder towers',
        'neck.forward': 'prompter',
        'decode_head.forward': 'head',
        'decode_head.encode_image': 'SAM image encoder',
    }

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        self.device = device
        self.times: Dict[str, List[float]] = {s: [] for s in STAGES}
        self.flops: Dict[str, int] = {}
        self.counter = None
        self.wrapped = []
        for method, stage in self.WRAPS.items():
            part, attr = method.split('.')
            owner = getattr(model, part)
            setattr(owner, attr, self._wrap(stage, getattr(owner, attr)))
            self.wrapped.append((owner, attr))

    def _wrap(self, stage: str, fn: Callable) -> Callable:

        def wrapped(*args, **kwargs):
            synchronize(self.device)
            flops = self.counter.get_total_flops() if self.counter else 0
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(self.device)
            self._time[stage] += time.perf_counter() - start
            if self.counter:
                self._flops[stage] += self.counter.get_total_flops() - flops
            return out

        return wrapped

    @contextmanager
    def forward(self, counter=None):
        """Collect the stage times of the forward inside (and its stage
        FLOPs from ``counter``, an active :func:`flop_counter`)."""
        self._time = dict.fromkeys((*STAGES, 'head'), 0.)
        self._flops = dict.fromkeys((*STAGES, 'head'), 0)
        self.counter = counter
        yield
        self.counter = None
        for totals in (self._time, self._flops):
            totals[STAGES[3]] = totals.pop('head') - totals[STAGES[2]]
        for stage in STAGES:
            self.times[stage].append(self._time[stage])
        if counter:
            self.flops = self._flops

    def remove(self) -> None:
        for owner, attr in self.wrapped:
            owner.__dict__.pop(attr, None)


# ------------------------------------------------------- model and inputs
def parse_cfg_options(options: Optional[Sequence[str]]) -> dict:
    """``key=value`` strings as mmengine's ``DictAction`` reads them."""
    from mmengine.config import DictAction
    namespace = argparse.Namespace()
    if options:
        DictAction([], 'cfg_options')(None, namespace, list(options))
    return getattr(namespace, 'cfg_options', {})


def load_config(config: str, cfg_options: Optional[Sequence[str]] = None):
    """Read a config, apply ``--cfg-options`` and clear pretrained paths."""
    from mmengine.config import Config

    from rsrefseg_mm.utils import drop_pretrained_checkpoints
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(parse_cfg_options(cfg_options))
    drop_pretrained_checkpoints(cfg.model)
    return cfg


def build_model(cfg,
                device: str = 'cpu',
                checkpoint: Optional[str] = None) -> torch.nn.Module:
    """The model of ``cfg`` (seeded random weights, or ``checkpoint``
    loaded through :func:`~rsrefseg_mm.apis.init_referring_model`) in eval
    mode, ``cfg`` attached."""
    from rsrefseg_mm.apis import init_referring_model
    torch.manual_seed(0)
    return init_referring_model(copy.deepcopy(cfg), checkpoint, device)


def input_size(cfg) -> Tuple[int, int]:
    """(H, W) of the config's data preprocessor (or ``crop_size``)."""
    size = cfg.model.get('data_preprocessor', {}).get('size') or \
        cfg.get('crop_size')
    if size is None:
        raise ValueError('the config has neither model.data_preprocessor.'
                         'size nor crop_size: no input size to measure at')
    return tuple(size)


def make_samples(texts: Sequence[str],
                 size: Tuple[int, int],
                 device: str,
                 with_gt: bool = False) -> list:
    """One data sample per expression (with a box mask as ground truth)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    samples = []
    for text in texts:
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                pad_shape=(h, w),
                text=text))
        if with_gt:
            gt = torch.zeros(1, h, w, dtype=torch.long, device=device)
            gt[:, h // 4:h // 2, w // 3:w // 2] = 1
            sample.gt_sem_seg = PixelData(data=gt)
        samples.append(sample)
    return samples


def expressions(k: int) -> List[str]:
    """K distinct expressions."""
    return [f'{TEXTS[i % len(TEXTS)]} number {i}' for i in range(k)]


def model_line(args, size: Tuple[int, int], extra: str = '') -> str:
    weights = args.checkpoint or 'random weights'
    return (f'{osp.basename(args.config)}, {weights}, input '
            f'{size[0]}x{size[1]}{extra}; {args.repeats} timed repeats '
            f'after {args.warmup} warm-up, medians')


# ------------------------------------------------------------ throughput
def throughput(args) -> Dict:
    """Images/s of ``model(..., mode='predict')`` or ``train_step``."""
    from rsrefseg_mm.utils import track
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.device, args.checkpoint)
    size, batch = input_size(cfg), args.batch_size
    texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
    dev = args.device
    if args.train:
        from mmengine.optim import build_optim_wrapper
        optim = copy.deepcopy(cfg.optim_wrapper)
        optim.pop('dtype', None)
        if args.bf16:
            optim.update(type='SkipNonFiniteAmpOptimWrapper', dtype='bfloat16')
        else:
            optim.update(type='SkipNonFiniteOptimWrapper')
        model.train()
        optim_wrapper = build_optim_wrapper(model, optim)
        gen = torch.Generator().manual_seed(0)
        data = dict(
            inputs=[
                torch.randint(0, 256, (3, *size), generator=gen).byte().to(dev)
                for _ in range(batch)
            ],
            data_samples=make_samples(texts, size, dev, with_gt=True))

        def run():
            model.train_step(data, optim_wrapper)
    else:
        # no parameter needs a gradient: FlopCounterMode's module tracker
        # fails on views of trainable parameters taken under no_grad (the
        # CascadedPrompter's queries)
        model.requires_grad_(False)
        torch.manual_seed(0)
        images = torch.rand(batch, 3, *size, device=dev) * 255
        samples = make_samples(texts, size, dev)

        def run():
            with torch.no_grad(), autocast(dev, args.bf16):
                model(images, samples, mode='predict')

    counter = flop_counter()
    latencies = []
    # stages of inference only (a training step's backward is not split)
    probe = None if args.train else StageProbe(model, dev)
    stages = probe.forward if probe else lambda counter=None: nullcontext()
    try:
        for i in track(range(args.warmup), 'warm-up', unit='run'):
            # FLOPs counted on the first run
            with counter if i == 0 else nullcontext(), \
                    stages(counter if i == 0 else None):
                run()
        if probe:
            probe.times = {s: [] for s in STAGES}
        with PeakMemory(dev) as mem:
            for _ in track(range(args.repeats), 'timed', unit='run'):
                with stages():
                    latencies.append(timed(dev, run))
    finally:
        if probe:
            probe.remove()
    lat = summarize(latencies)
    flops = counter.get_total_flops() / batch
    kind = 'max allocated' if dev.startswith('cuda') else 'max RSS'
    unit = 's/step' if args.train else 's/batch'
    rows = [('images/s', batch / lat['median']),
            (f'latency, median ({unit})', lat['median']),
            (f'latency, p90 ({unit})', lat['p90']),
            (f'peak memory ({kind}, MiB)', mem.peak / MIB),
            ('peak memory over the loaded model (MiB)', mem.delta / MIB),
            ('GFLOPs/image' + (' (forward + backward)' if args.train else ''),
             flops / 1e9),
            ('TFLOP/s achieved', flops * batch / lat['median'] / 1e12)]
    if args.train:
        rows.append(
            ('trainable parameters (M)',
             sum(p.numel()
                 for p in model.parameters() if p.requires_grad) / 1e6))
    what = 'training step' if args.train else 'inference'
    precision = 'bf16 autocast' if args.bf16 else 'fp32'
    print(f'\n### Throughput, {what}: {osp.basename(args.config)}\n')
    print(f'{context(dev)}\n\n'
          f'{model_line(args, size, f", batch {batch}, {precision}")}\n')
    print_table(['measurement', 'value'], rows)
    out = dict(rows=dict(rows))
    if probe:
        stage_s = {s: float(np.median(t)) for s, t in probe.times.items()}
        total = sum(stage_s.values())
        print_table(['stage', 'median s/batch', 'share (%)', 'GFLOPs/image'],
                    [(s, stage_s[s], 100 * stage_s[s] / total,
                      probe.flops[s] / batch / 1e9) for s in STAGES])
        out.update(
            stages=stage_s,
            stage_flops={s: probe.flops[s] / batch
                         for s in STAGES})
    return out


# ----------------------------------------------------------- encode-once
def encode_once(args) -> Dict:
    """First, follow-up and cached-image latency of ReferringPredictor, and
    K expressions through it against K one-pass forwards."""
    from rsrefseg_mm.apis import ReferringPredictor
    from rsrefseg_mm.utils import track
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.device, args.checkpoint)
    dev, size, k = args.device, input_size(cfg), args.expressions
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    texts = expressions(k)
    # cache_size=0: every set_image encodes; the second predictor keeps it
    predictor = ReferringPredictor(model, max_batch=k)
    cached = ReferringPredictor(model, cache_size=1)
    cached.set_image(image)
    rgb = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)
    inputs = rgb[None].float().to(dev)
    samples = make_samples(texts, size, dev)

    def first():
        predictor.set_image(image)
        predictor.predict(texts[0])

    def follow_up():
        predictor.predict(texts[-1])

    def from_cache():
        cached.set_image(image)
        if not cached.from_cache:
            raise RuntimeError('ReferringPredictor(cache_size=1) encoded '
                               'the image it had just encoded again')
        cached.predict(texts[0])

    def all_expressions():
        predictor.set_image(image)
        predictor.predict(texts)

    def forwards():
        with torch.no_grad():
            for sample in samples:
                model(inputs, [sample], mode='predict')

    steps = {
        'first query (set_image + 1 expression)': first,
        'follow-up query (1 expression, image encoded)': follow_up,
        'image from the cache (set_image + 1 expression)': from_cache,
        f'{k} expressions, predictor (1 encode)': all_expressions,
        f'{k} expressions, {k} one-pass forwards': forwards,
    }
    names = list(steps)
    times = {name: [] for name in names}
    with autocast(dev, args.bf16):
        for r in track(
                range(args.warmup + args.repeats), 'rounds', unit='round'):
            for name, step in steps.items():  # interleaved
                seconds = timed(dev, step)
                if r >= args.warmup:
                    times[name].append(seconds)
    res = {name: summarize(t) for name, t in times.items()}
    med = [res[name]['median'] for name in names]
    precision = 'bf16 autocast' if args.bf16 else 'fp32'
    print(f'\n### Encode once, {k} expressions: '
          f'{osp.basename(args.config)}\n')
    print(f'{context(dev)}\n\n{model_line(args, size, f", {precision}")}; '
          'the five measurements interleaved in every repeat\n')
    print_table(['measurement', 'median s', 'p90 s'],
                [(n, res[n]['median'], res[n]['p90']) for n in names])
    print_table(['ratio', 'value'],
                [('follow-up / first', med[1] / med[0]),
                 (f'{k} forwards / predictor', med[4] / med[3])])
    return res


# ------------------------------------------------------------------ onnx
def exported_model(folder: str,
                   model: torch.nn.Module,
                   cfg,
                   args,
                   quantize: Optional[Sequence[str]] = None
                   ) -> Tuple[dict, List[str]]:  # yapf: disable
    """The ONNX export of ``model`` in ``folder``: reused when its
    ``deploy.json`` names the same config and checkpoint (and the same
    quantization), exported there (then quantized) when it has none.

    Returns:
        tuple: The ``deploy.json`` content and notes for the report.

    Raises:
        ValueError: ``folder`` holds another model's export, or one
            quantized differently.
    """
    from rsrefseg_mm.deployment import DEFAULT_OPSET, export_onnx, file_sha256
    from rsrefseg_mm.deployment.quantize import quantize_folder
    deploy = osp.join(folder, 'deploy.json')
    if not osp.isfile(deploy):
        start = time.perf_counter()
        info = export_onnx(
            model,
            cfg,
            folder,
            args.config,
            args.checkpoint,
            opset=args.opset or DEFAULT_OPSET,
            dynamic_expressions=True,
            texts=TEXTS[:2])
        if quantize:
            info = quantize_folder(folder, quantize)
        size = sum(
            osp.getsize(osp.join(folder, f)) for f in os.listdir(folder))
        return info, [
            f'exported to {folder} ({"int8" if quantize else "fp32"}) in '
            f'{time.perf_counter() - start:.0f} s ({size / 1e6:.1f} MB)'
        ]
    with open(deploy) as f:
        info = json.load(f)
    for key, path in (('config', args.config), ('checkpoint',
                                                args.checkpoint)):
        if info.get(f'{key}_sha256') != (path and file_sha256(path)):
            raise ValueError(
                f'{deploy} was exported from another {key} than '
                f'{path or "random weights"}: give an empty folder to '
                'export this model there')
    quantized = (info.get('quantization') or {}).get('graphs')
    if sorted(quantized or []) != sorted(quantize or []):
        raise ValueError(
            f'{deploy}: quantized graphs {sorted(quantized or [])}'
            f', expected {sorted(quantize or [])}; give an '
            'empty folder to export this model there')
    return info, []


def onnx_vs_torch(args) -> Dict:
    """ReferringPredictor against OnnxReferringPredictor."""
    import onnxruntime as ort

    from rsrefseg_deploy import OnnxReferringPredictor
    from rsrefseg_mm.apis import ReferringPredictor
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, 'cpu', args.checkpoint)
    info, notes = exported_model(args.model_dir, model, cfg, args)
    runtimes = dict(
        PyTorch=ReferringPredictor(model),
        ORT=OnnxReferringPredictor(args.model_dir, threads=args.threads))
    size = input_size(cfg)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    queries = ('first', 'follow-up')
    times = {(rt, q): [] for rt in runtimes for q in queries}
    prob_diff = mask_diff = 0.
    for r in range(args.warmup + args.repeats):
        outs = {}
        for rt, predictor in runtimes.items():  # interleaved
            start = time.perf_counter()
            predictor.set_image(image)
            outs[rt, 'first'] = predictor.predict(TEXTS[0])
            middle = time.perf_counter()
            outs[rt, 'follow-up'] = predictor.predict(TEXTS[-1])
            if r >= args.warmup:
                times[rt, 'first'].append(middle - start)
                times[rt, 'follow-up'].append(time.perf_counter() - middle)
        for q in queries:
            ours, theirs = outs['PyTorch', q], outs['ORT', q]
            # seg_logits of a one-channel head hold the probabilities
            prob = ours.seg_logits.data[0].cpu().numpy()
            mask = ours.pred_sem_seg.data[0].cpu().numpy()
            prob_diff = max(prob_diff,
                            float(np.abs(prob - theirs.probability).max()))
            mask_diff = max(mask_diff, float((mask != theirs.mask).mean()))
    res = {key: summarize(t) for key, t in times.items()}
    print(f'\n### ONNX Runtime vs PyTorch: {osp.basename(args.config)}\n')
    print(f'{context()}, onnxruntime {ort.__version__} '
          f'(CPUExecutionProvider, {args.threads or "default"} threads), '
          f'opset {info["opset"]}\n\n{model_line(args, size, ", fp32")}; '
          'tokenizer included, the four queries interleaved in every '
          'repeat\n')
    rows = []
    for q, name in zip(queries, ('first query (set_image + 1 expression)',
                                 'follow-up query (1 expression)')):
        pt, rt = res['PyTorch', q]['median'], res['ORT', q]['median']
        rows.append((name, pt, rt, rt / pt))
    print_table([
        'query', 'PyTorch median s', 'ONNX Runtime median s',
        'ONNX Runtime / PyTorch'
    ], rows)
    print_table(['agreement', 'value'],
                [('largest probability difference', prob_diff),
                 ('mask pixels that differ (%)', 100 * mask_diff)])
    for note in notes:
        print(note)
    return dict(
        times={f'{rt} {q}': v
               for (rt, q), v in res.items()},
        prob_diff=prob_diff,
        mask_diff=mask_diff)


# ------------------------------------------------------------- precision
def _precision_runtimes(args, cfg, model) -> Dict[str, object]:
    """fp32 / bf16 PyTorch and fp32 / int8 ONNX Runtime predictors of one
    model (each ONNX folder exported, and quantized, when absent)."""
    from rsrefseg_deploy import OnnxReferringPredictor
    from rsrefseg_mm.apis import ReferringPredictor
    runtimes, notes = {}, []
    for precision in ('fp32', 'bf16'):
        try:
            runtimes[f'PyTorch {precision}'] = ReferringPredictor(
                model, precision=precision)
        except RuntimeError as e:  # no native bf16 here: say so
            notes.append(f'PyTorch {precision}: {e}')
    for name, folder, quantize in (('fp32', args.model_dir, None),
                                   ('int8', args.int8_dir,
                                    args.quantize_graphs)):
        notes += exported_model(folder, model, cfg, args, quantize)[1]
        # no spinning threads: PyTorch runs between ONNX Runtime's calls
        runtimes[f'ORT {name}'] = OnnxReferringPredictor(
            folder, threads=args.threads, spinning=False)
    return runtimes, notes


def _answers(result) -> Tuple[np.ndarray, np.ndarray]:
    """(probability, mask) of either predictor's result."""
    if hasattr(result, 'probability'):
        return result.probability, result.mask
    return (result.seg_logits.data[0].float().cpu().numpy(),
            result.pred_sem_seg.data[0].cpu().numpy())


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _test_samples(cfg, count: int) -> List[dict]:
    """The first ``count`` samples of the config's test split: image (BGR),
    ground-truth mask and expression."""
    from mmseg.registry import DATASETS, TRANSFORMS
    dataset = DATASETS.build(
        dict(cfg.test_dataloader.dataset, pipeline=[], lazy_init=False))
    loaders = [
        TRANSFORMS.build(dict(type=t))
        for t in ('LoadReferringImageFromFile', 'LoadReferringAnnotations')
    ]
    samples = []
    for i in range(min(count, len(dataset))):
        info = dataset.get_data_info(i)
        if 'img' not in info:
            info = loaders[0](info)
        if 'gt_seg_map' not in info:
            info = loaders[1](info)
        samples.append(
            dict(img=info['img'], gt=info['gt_seg_map'], text=info['text']))
    return samples


def precision_compare(args) -> Dict:
    """fp32 vs bf16 (PyTorch) vs fp32 vs int8 (ONNX Runtime): first query,
    windows/s, follow-up, agreement with fp32 and, on the config's test
    split, mIoU."""
    import onnxruntime as ort

    from rsrefseg_mm.apis.precision import cpu_bf16_support
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, 'cpu', args.checkpoint)
    runtimes, notes = _precision_runtimes(args, cfg, model)
    size = input_size(cfg)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    times = {(rt, q): []
             for rt in runtimes for q in ('encode', 'first', 'follow-up')}
    outs = {}
    for r in range(args.warmup + args.repeats):
        for rt, predictor in runtimes.items():  # interleaved
            start = time.perf_counter()
            predictor.set_image(image)
            encoded = time.perf_counter()
            outs[rt] = _answers(predictor.predict(TEXTS[0]))
            middle = time.perf_counter()
            predictor.predict(TEXTS[-1])
            if r >= args.warmup:
                times[rt, 'encode'].append(encoded - start)
                times[rt, 'first'].append(middle - start)
                times[rt, 'follow-up'].append(time.perf_counter() - middle)
    med = {k: summarize(v)['median'] for k, v in times.items()}
    print(f'\n### Precision: {osp.basename(args.config)}\n')
    print(f'{context()}, onnxruntime {ort.__version__} '
          f'(CPUExecutionProvider, {args.threads or "default"} threads); '
          f'torch.cpu native bf16: {cpu_bf16_support()}\n\n'
          f'{model_line(args, size)}; one {size[0]} x {size[1]} window, '
          'the runtimes interleaved in every repeat\n')
    base = {'PyTorch': 'PyTorch fp32', 'ORT': 'ORT fp32'}
    rows = []
    for rt in runtimes:
        ref = base[rt.split()[0]]
        prob, mask = outs[rt]
        rprob, rmask = outs[ref]
        rows.append(
            (rt, med[rt, 'first'], 1 / med[rt, 'encode'],
             med['ORT fp32', 'encode'] / med[rt, 'encode'], med[rt,
                                                                'follow-up'],
             float(np.abs(_logit(prob) - _logit(rprob)).max()), 100 * float(
                 (mask != rmask).mean())))
    print_table([
        'runtime', 'first query s', 'windows/s', 'windows/s vs ORT fp32',
        'follow-up s', 'largest logit diff vs its fp32',
        'mask pixels differing %'
    ], rows)
    if 'PyTorch bf16' in runtimes:
        from rsrefseg_mm.apis.precision import onednn_kernels
        kernels = onednn_kernels(
            lambda: runtimes['PyTorch bf16'].set_image(image))
        print('\noneDNN kernels of one bf16 image encoding (runs): ' +
              ', '.join(
                  f'{k} ({n})'
                  for k, n in sorted(kernels.items(), key=lambda kv: -kv[1])
                  if k.split()[0] in ('matmul', 'convolution',
                                      'inner_product')))
    quality = {}
    if args.quality_samples:
        samples = _test_samples(cfg, args.quality_samples)
        inter = {rt: [] for rt in runtimes}
        union = {rt: [] for rt in runtimes}
        masks = {rt: [] for rt in runtimes}
        for s in samples:
            for rt, predictor in runtimes.items():
                predictor.set_image(s['img'])
                mask = _answers(predictor.predict(s['text']))[1] > 0
                gt = s['gt'] == 1
                inter[rt].append(int((mask & gt).sum()))
                union[rt].append(int((mask | gt).sum()))
                masks[rt].append(mask)
        for rt in runtimes:
            ref = base[rt.split()[0]]
            ious = [i / u if u else 1.0 for i, u in zip(inter[rt], union[rt])]
            same = np.mean([(a == b).mean()
                            for a, b in zip(masks[rt], masks[ref])])
            quality[rt] = (100 * float(np.mean(ious)),
                           100 * sum(inter[rt]) / max(sum(union[rt]), 1),
                           100 * float(same))
        print(f'\n{len(samples)} test samples of the config\'s dataset:\n')
        print_table([
            'runtime on the test split', 'mIoU', 'oIoU',
            'pixels equal to its fp32 %'
        ], [(rt, *q) for rt, q in quality.items()])
    for note in notes:
        print(note)
    return dict(
        times={f'{rt} {q}': v
               for (rt, q), v in med.items()},
        rows=rows,
        quality=quality)


# ---------------------------------------------------------- scene-memory
#: Rows written per block when a scene is generated, and GDAL's cache then.
WRITE_ROWS, WRITE_CACHE_BYTES = 256, 256 * MIB
#: Field parcel size (px) and nodata margin (fraction of the width).
PARCEL, MARGIN = 512, 1 / 64


def write_scene(path: str, size: int, overviews: bool = False) -> None:
    """Write a ``size`` x ``size`` 4-band uint16 GeoTIFF block by block.

    256 x 256 tiles, deflate, EPSG:32633 at 0.5 m, nodata 0 in a left
    margin, field parcels of ``PARCEL`` px; ``overviews`` adds internal
    average overviews (factors 4, 16, ... down to 256 px).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    profile = dict(
        driver='GTiff',
        width=size,
        height=size,
        count=4,
        dtype='uint16',
        crs='EPSG:32633',
        transform=from_origin(400000, 5000000, 0.5, 0.5),
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress='deflate',
        BIGTIFF='IF_SAFER')
    cols = np.arange(size, dtype=np.int32)[None] // PARCEL
    margin = int(size * MARGIN)
    with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES), \
            rasterio.open(path, 'w', **profile) as dst:
        for r0 in range(0, size, WRITE_ROWS):
            h = min(WRITE_ROWS, size - r0)
            rows = np.arange(r0, r0 + h, dtype=np.int32)[:, None] // PARCEL
            parcel = (rows * 7 + cols * 13) % 17
            block = np.stack([
                300 + 150 * b + parcel * (40 + 10 * b) for b in range(4)
            ]).astype(np.uint16)
            block[:, :, :margin] = 0
            dst.write(block, window=Window(0, r0, size, h))
        if overviews:
            factors = [4**i for i in range(1, 12) if size // 4**i >= 256]
            dst.build_overviews(factors, Resampling.average)


def scene_child(args) -> None:
    """One measurement, in its own process: prints a JSON line."""
    from rsrefseg_mm.apis import ReferringPredictor, save_referring_outputs
    model = build_model(
        load_config(args.config, args.cfg_options), 'cpu', args.checkpoint)
    predictor = ReferringPredictor(model)
    loaded = time.perf_counter()
    model_rss = proc_status_mib('self', 'VmHWM')
    image = predictor.set_image(args.child, bands=(3, 2, 1))
    read = time.perf_counter()
    result = predictor.predict('the bright field')
    extra = {} if args.output_resolution == 'working' else dict(
        output_resolution='native', threshold=model.decode_head.threshold)
    save_referring_outputs(image, result, 'the bright field', args.out_dir,
                           'scene', **extra)
    print(
        json.dumps(
            dict(
                shape=list(image.img.shape[:2]),
                read_s=read - loaded,
                infer_s=time.perf_counter() - loaded,
                model_rss=model_rss,
                peak_rss=proc_status_mib('self', 'VmHWM'),
                context=context())),
        flush=True)


def scene_run(scene: str, out_dir: str, args) -> Dict:
    """:func:`scene_child` in a subprocess, stopped past the RSS limit.

    Returns:
        dict: The child's figures and ``wall_s``, or ``killed`` with the
        resident memory seen when it was stopped.
    """
    cmd = [
        sys.executable,
        osp.abspath(__file__), 'scene-memory', args.config, '--child', scene,
        '--out-dir', out_dir, '--output-resolution', args.output_resolution
    ]
    for flag in ('checkpoint', 'threads'):
        if getattr(args, flag):
            cmd += [f'--{flag}', str(getattr(args, flag))]
    if args.cfg_options:
        cmd += ['--cfg-options', *args.cfg_options]
    return run_child(cmd, args.rss_limit_gb, scene)


def run_child(cmd: List[str], rss_limit_gb: float, what: str) -> Dict:
    """Run a measuring child process, stopped past ``rss_limit_gb``.

    Returns:
        dict: The JSON of the child's last output line and ``wall_s``, or
        ``killed`` with the resident memory seen when it was stopped.

    Raises:
        RuntimeError: The child failed (with the end of its stderr).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0.
    while proc.poll() is None:  # poll the child's resident memory
        seen = max(seen, proc_status_mib(proc.pid, 'VmRSS') or 0.)
        if seen > rss_limit_gb * 1024:
            proc.kill()
            proc.communicate()
            return dict(killed=True, peak_rss=seen)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f'the measurement of {what} failed:\n'
                           f'{err[-3000:]}')
    return dict(json.loads(out.strip().splitlines()[-1]), wall_s=wall)


def scene_memory(args) -> Dict[int, Dict]:
    """Each scene size written, measured ``--repeats`` times, deleted."""
    import rasterio
    root = tempfile.mkdtemp(prefix='scene_memory_', dir=args.work_dir)
    columns = {}
    try:
        for size in args.sizes:
            scene = osp.join(root, f'scene_{size}.tif')
            write_scene(scene, size, args.overviews)
            runs = []
            for i in range(args.repeats):
                runs.append(scene_run(scene, osp.join(root, f'out{i}'), args))
                print(
                    f'{size} px, run {i + 1}: {json.dumps(runs[-1])}',
                    file=sys.stderr,
                    flush=True)
                if runs[-1].get('killed'):
                    break
            columns[size] = dict(file_mb=osp.getsize(scene) / 1e6, runs=runs)
            os.remove(scene)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    done = [r for c in columns.values() for r in c['runs'] if 'context' in r]
    print('\n### Scene memory: read, predict and save on large GeoTIFFs\n')
    print(f'{done[0]["context"] if done else context()} (each run a fresh '
          f'process); rasterio {rasterio.__version__}, GDAL '
          f'{rasterio.__gdal_version__}\n\n{osp.basename(args.config)}, '
          f'{args.checkpoint or "random weights"}, 4-band uint16 scenes'
          f'{" with overviews" if args.overviews else ""}, '
          f'{args.output_resolution} mask; medians of up to {args.repeats} '
          'runs; peak RSS includes the interpreter, torch and the model\n')

    ok = {
        s: [r for r in c['runs'] if not r.get('killed')]
        for s, c in columns.items()
    }
    rows = [('file (MB)', *(c['file_mb'] for c in columns.values())),
            ('image read (px)',
             *('{1} x {0}'.format(*ok[s][0]['shape']) if ok[s] else '-'
               for s in columns))]
    for key, name in (('read_s', 'read + encode (s)'),
                      ('infer_s', 'to the saved outputs (s)'),
                      ('wall_s', 'process wall time (s)'),
                      ('model_rss', 'RSS, model loaded (MiB)'),
                      ('peak_rss', 'peak RSS (MiB)')):
        rows.append(
            (name, *(float(np.median([r[key]
                                      for r in ok[s]])) if ok[s] else '-'
                     for s in columns)))
    rows.append(('runs', *(str(len(ok[s])) if ok[s] else 'stopped at '
                           f'{c["runs"][-1]["peak_rss"]:.0f} MiB'
                           for s, c in columns.items())))
    print_table(['measurement', *(f'{s:,} x {s:,}' for s in columns)], rows)
    return columns


# ----------------------------------------------------------------- scene
#: Methods of the scene mode: a decimated whole-image read, sliding windows
#: (PyTorch, and ONNX Runtime with ``--model-dir``).
SCENE_METHODS = ('decimated', 'slide', 'slide-onnx')


def scene_bench_child(args) -> None:
    """One method on the scenes of one size, in its own process: every
    scene read (encoded) once and asked its expressions; prints a JSON
    line with the times, the mask files and ``VmHWM``."""
    from rsrefseg_core.geo import write_mask_geotiff, write_native_mask_geotiff
    from rsrefseg_core.scene import ScenePredictor
    from rsrefseg_core.scene.predictor import slug
    from rsrefseg_mm.apis import ReferringPredictor
    method = args.child_method
    if method == 'slide-onnx':
        from rsrefseg_deploy import OnnxReferringPredictor
        runtime = OnnxReferringPredictor(
            args.model_dir, threads=args.threads, max_read_size=None)
    else:
        model = build_model(
            load_config(args.config, args.cfg_options), 'cpu', args.checkpoint)
        runtime = ReferringPredictor(
            model, max_read_size='auto' if method == 'decimated' else None)
    slide = ScenePredictor(
        runtime,
        window_batch=args.window_batch,
        max_memory=int(args.max_memory * MIB),
        progress=False,
        flip_check=args.flip_check or (),
        filter_gate=args.filter_gate) \
        if method != 'decimated' else None
    model_rss = proc_status_mib('self', 'VmHWM')
    threshold = runtime.mask_threshold
    scenes = []
    for scene_file in args.child_scenes:
        with open(scene_file) as f:
            scene = json.load(f)
        stem = osp.splitext(osp.basename(scene['path']))[0]
        start = time.perf_counter()
        if slide is not None:
            slide.set_scene(scene['path'], bands=(1, 2, 3), stretch=None)
            read = dict(windows=len(slide.grid))
        else:
            image = runtime.set_image(
                scene['path'], bands=(1, 2, 3), stretch=None)
            read = dict(read_shape=list(image.img.shape[:2]))
        read['encode_s'] = time.perf_counter() - start
        answers = []
        for expr in scene['expressions']:
            start = time.perf_counter()
            if slide is not None:
                res = slide.predict(expr['text'], args.out_dir, stem=stem)
                mask_path, presence = res.mask_path, res.presence
            else:
                res = runtime.predict(expr['text'])
                mask_path = osp.join(args.out_dir,
                                     f'{stem}_{slug(expr["text"])}_mask.tif')
                if image.decimated:  # upsampled to the scene's grid
                    write_native_mask_geotiff(
                        mask_path, res.seg_logits.data[0].cpu().numpy(),
                        threshold, image, expr['text'])
                else:  # a scene no larger than the working size
                    write_mask_geotiff(mask_path,
                                       res.pred_sem_seg.data[0].cpu().numpy(),
                                       image.transform, image.crs,
                                       image.nodata_mask, expr['text'])
                presence = res.metainfo.get('presence')
            answers.append(
                dict(
                    seconds=time.perf_counter() - start,
                    mask_path=mask_path,
                    presence=presence))
        scenes.append(dict(read, answers=answers))
    if slide is not None:
        slide.close()
    print(
        json.dumps(
            dict(
                scenes=scenes,
                model_rss=model_rss,
                peak_rss=proc_status_mib('self', 'VmHWM'),
                context=context())),
        flush=True)


def score_answer(mask_path: str, expr: Dict) -> Dict:
    """IoU of a predicted mask GeoTIFF with the expression's ground truth
    (``iou``; ``empty`` for a no-target expression)."""
    import rasterio
    with rasterio.open(mask_path) as src:
        pred = src.read(1) == 1
    if not expr['targets']:
        return dict(empty=not pred.any())
    with rasterio.open(expr['gt_path']) as src:
        gt = src.read(1) == 1
    if pred.shape != gt.shape:
        raise ValueError(f'{mask_path}: mask {pred.shape} is not on the '
                         f'grid of its ground truth {gt.shape}')
    union = np.logical_or(pred, gt).sum()
    return dict(iou=float(np.logical_and(pred, gt).sum() / union))


def scene_scores(run: Dict, scenes: List[Dict]) -> Dict[str, object]:
    """The table cells of one method and size (see :func:`scene_bench`)."""
    if run.get('killed'):
        return dict(peak=f'stopped at {run["peak_rss"]:.0f} MiB')
    by_kind: Dict[str, List[Dict]] = {'one': [], 'several': [], 'absent': []}
    for scene, measured in zip(scenes, run['scenes']):
        for expr, ans in zip(scene['expressions'], measured['answers']):
            by_kind[expr['kind']].append(score_answer(ans['mask_path'], expr))
    targets = by_kind['one'] + by_kind['several']
    # gIoU: a no-target expression scores 1 for an empty mask, else 0
    giou = [s['iou'] for s in targets] + \
        [float(s['empty']) for s in by_kind['absent']]
    first = [m['encode_s'] + m['answers'][0]['seconds'] for m in run['scenes']]
    follow = [m['answers'][1]['seconds'] for m in run['scenes']]
    windows = [m.get('windows') for m in run['scenes']]
    return dict(
        read=f'{windows[0]} windows' if windows[0] else '{} x {} read'.format(
            *run['scenes'][0]['read_shape'][::-1]),
        hit_one=100 * np.mean([s['iou'] >= 0.5 for s in by_kind['one']]),
        hit_several=100 *
        np.mean([s['iou'] >= 0.5 for s in by_kind['several']]),
        hit=100 * np.mean([s['iou'] >= 0.5 for s in targets]),
        miou=100 * np.mean([s['iou'] for s in targets]),
        empty=100 * np.mean([s['empty'] for s in by_kind['absent']]),
        giou=100 * np.mean(giou),
        encode=float(np.median([m['encode_s'] for m in run['scenes']])),
        wps=float(
            np.median([m['windows'] / m['encode_s']
                       for m in run['scenes']])) if windows[0] else '-',
        first=float(np.median(first)),
        follow=float(np.median(follow)),
        ratio=float(np.median(np.divide(follow, first))),
        peak=run['peak_rss'])


#: Rows of the scene table: (key of :func:`scene_scores`, row name).
SCENE_ROWS = (
    ('read', 'model input'),
    ('hit_one', 'hit rate, one referent (%)'),
    ('hit_several', 'hit rate, several referents (%)'),
    ('hit', 'hit rate, all target expressions (%)'),
    ('miou', 'mean IoU, target expressions (%)'),
    ('empty', 'empty mask on no-target (%)'),
    ('giou', 'gIoU (%)'),
    ('encode', 'read + encode (s)'),
    ('wps', 'windows/s encoded'),
    ('first', 'first: read + encode + 1 expression (s)'),
    ('follow', 'follow-up expression (s)'),
    ('ratio', 'follow-up / first'),
    ('peak', 'peak RSS (MiB)'),
)


def scene_goals(cells: Dict[Tuple[int, str], Dict]) -> List[Tuple]:
    """Rows ``(goal, measured, met)`` of the goals of the scene mode."""

    def met(ok: bool) -> str:
        return 'yes' if ok else 'no'

    rows = []
    sizes = sorted({s for s, _ in cells})
    ok = {
        s: all('hit' in cells.get((s, m), {}) for m in ('decimated', 'slide'))
        for s in sizes
    }
    for s in sizes:
        if ok[s]:
            slide, dec = cells[s, 'slide'], cells[s, 'decimated']
            rows.append((f'{s:,} px: slide hit rate >= 80 %, decimated '
                         '<= 20 %', f'{slide["hit"]:.0f} % / '
                         f'{dec["hit"]:.0f} %',
                         met(slide['hit'] >= 80 and dec['hit'] <= 20)))
            rows.append((f'{s:,} px: slide empty on >= 80 % of no-target',
                         f'{slide["empty"]:.0f} %', met(slide['empty'] >= 80)))
            rows.append((f'{s:,} px: slide follow-up <= 1/10 of first',
                         f'{slide["ratio"]:.3f}', met(slide['ratio'] <= .1)))
    if len(sizes) > 1 and ok[sizes[0]] and ok[sizes[-1]]:
        lo, hi = (cells[s, 'slide']['peak'] for s in (sizes[0], sizes[-1]))
        rows.append(
            (f'slide peak RSS within 10 % ({sizes[0]:,} -> '
             f'{sizes[-1]:,} px)', f'{lo:.0f} -> {hi:.0f} MiB '
             f'({100 * (hi / lo - 1):+.1f} %)', met(abs(hi / lo - 1) <= .1)))
    return rows


def scene_bench(args) -> Dict:
    """Referring on large synthetic scenes: decimated read against sliding
    windows, per scene size (``--scenes`` seeded scenes each), one fresh
    process per method and size."""
    import rasterio

    from rsrefseg_mm.datasets.synthetic_large_scene import (
        generate_large_scene, write_large_scene)
    cfg = load_config(args.config, args.cfg_options)
    size = input_size(cfg)
    notes = []
    if 'slide-onnx' in args.methods:
        model = build_model(cfg, 'cpu', args.checkpoint)
        notes = exported_model(args.model_dir, model, cfg, args)[1]
        del model
    root = tempfile.mkdtemp(prefix='scene_bench_', dir=args.work_dir)
    cells, scenes = {}, {}
    try:
        for s in args.sizes:
            folder = osp.join(root, f'scenes_{s}')
            os.makedirs(folder)
            scenes[s] = [
                write_large_scene(
                    generate_large_scene(
                        args.seed + k,
                        s,
                        cell=size[0],
                        referent_colours=args.referent_colours), folder,
                    f'scene{k}') for k in range(args.scenes)
            ]
            for method in args.methods:
                out = osp.join(root, f'{method}_{s}')
                os.makedirs(out)
                cmd = [
                    sys.executable,
                    osp.abspath(__file__), 'scene', args.config,
                    '--child-method', method, '--out-dir', out,
                    '--window-batch',
                    str(args.window_batch), '--max-memory',
                    str(args.max_memory), '--child-scenes', *[
                        osp.join(folder, f'scene{k}.json')
                        for k in range(args.scenes)
                    ]
                ]
                if args.flip_check:
                    cmd += ['--flip-check', *args.flip_check]
                if args.filter_gate is not None:
                    cmd += ['--filter-gate', str(args.filter_gate)]
                for flag in ('checkpoint', 'threads', 'model_dir'):
                    if getattr(args, flag):
                        cmd += [
                            f'--{flag.replace("_", "-")}',
                            str(getattr(args, flag))
                        ]
                if args.cfg_options:
                    cmd += ['--cfg-options', *args.cfg_options]
                run = run_child(cmd, args.rss_limit_gb, f'{method} at {s} px')
                print(
                    f'{s} px, {method}: {json.dumps(run)[:2000]}',
                    file=sys.stderr,
                    flush=True)
                cells[s, method] = dict(
                    scene_scores(run, scenes[s]), context=run.get('context'))
    finally:
        if args.keep:
            print(f'scenes and outputs kept in {root}', file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    done = [c['context'] for c in cells.values() if c['context']]
    decimated = load_referring_working_size(cfg)
    # the runtimes' default window: the config's scene_window_size
    window = cfg.get('scene_window_size') or size[0]
    window = window if isinstance(window, int) else window[0]
    presence = cfg.model.decode_head.get('presence_cfg')
    if presence:  # the head's defaults: threshold 0.5, the scene's = it
        level = presence.get('scene_threshold', presence.get('threshold', 0.5))
        gate = (f'a window counts where its presence is >= {level} '
                '(presence_cfg.scene_threshold); ')
    else:
        gate = 'no presence output: every window counts; '
    if args.flip_check:
        gate += (f'a window that passes must pass again flipped '
                 f'({", ".join(args.flip_check)}; the direction words of '
                 'the expression swapped), its presence the least of the '
                 "views', its probability their mean; ")
    if args.filter_gate is not None:
        gate += ('only windows whose global text filter reaches the logit '
                 f'{args.filter_gate:g} are decoded; ')
    print('\n### Scene: decimated read against sliding windows\n')
    print(f'{done[0] if done else context()} (each method and size a fresh '
          f'process); rasterio {rasterio.__version__}, GDAL '
          f'{rasterio.__gdal_version__}\n\n{osp.basename(args.config)}, '
          f'{args.checkpoint or "random weights"}, input {size[0]}x{size[1]}'
          f'; {args.scenes} synthetic scenes per size (seed {args.seed}, '
          f'{args.referent_colours} referent colours), each with 3 '
          'expressions: one referent, several referents in windows apart, '
          'no target; decimated: the whole scene read at '
          f'{decimated} px (longest side), mask brought to the scene grid; '
          f'slide: windows of {window} px, stride {window * 3 // 4}, '
          f'{args.window_batch} per batch, {gate}embeddings over '
          f'{args.max_memory:g} MiB in a file; slide-onnx: the same windows '
          'through ONNX Runtime (CPUExecutionProvider, '
          f'{args.threads or "default"} threads; image encoder once per '
          'window, text encoder once per expression, decoder once per window '
          'and expression). Hit: IoU >= 0.5 with the ground '
          'truth; times are medians over the scenes; peak RSS is the '
          "process's VmHWM (interpreter, torch and model included)\n")
    columns = [(s, m) for s in args.sizes for m in args.methods]
    print_table(['measurement', *(f'{m} {s:,} px' for s, m in columns)],
                [(name, *(cells[c].get(key, '-') for c in columns))
                 for key, name in SCENE_ROWS])
    print_table(['goal', 'measured', 'met'], scene_goals(cells))
    for note in notes:
        print(note)
    return cells


def load_referring_working_size(cfg) -> int:
    """Longest side of the predictor's ``max_read_size='auto'`` reads."""
    from rsrefseg_mm.apis.pipeline import working_size
    return int(working_size(cfg))


# ------------------------------------------------------------------- CLI
MODES = {
    'throughput': throughput,
    'encode-once': encode_once,
    'onnx': onnx_vs_torch,
    'precision': precision_compare,
    'scene-memory': scene_memory,
    'scene': scene_bench
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument('config', help='model config file')
    model.add_argument(
        '--checkpoint', help='runner checkpoint (default: random weights)')
    model.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override config settings (mmengine DictAction syntax)')
    model.add_argument(
        '--threads', type=int, help='torch (and ONNX Runtime) CPU threads')
    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument('--repeats', type=int, default=5, help='timed runs')
    timing.add_argument(
        '--warmup',
        type=int,
        default=1,
        help='untimed runs first (throughput: at least 1, on which the '
        'FLOPs are counted)')
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu | cuda (default: cuda when available)')
    device.add_argument(
        '--bf16',
        action='store_true',
        help='bf16 autocast (training: SkipNonFiniteAmpOptimWrapper, CUDA '
        'only)')
    parser = argparse.ArgumentParser(
        description='Benchmark an RSRefSeg config (random inputs)',
        epilog='See docs/benchmark.md.')
    sub = parser.add_subparsers(dest='mode', required=True, metavar='MODE')
    p = sub.add_parser(
        'throughput',
        parents=[model, timing, device],
        help='images/s of the forward (or --train: training steps)')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument(
        '--train', action='store_true', help='time model.train_step')
    p = sub.add_parser(
        'encode-once',
        parents=[model, timing, device],
        help='ReferringPredictor: first vs follow-up expression')
    p.add_argument(
        '--expressions',
        type=int,
        default=8,
        metavar='K',
        help='expressions on the image (default 8)')
    p = sub.add_parser(
        'onnx',
        parents=[model, timing],
        help='ONNX Runtime vs PyTorch predictor (CPU)')
    p.add_argument(
        '--model-dir',
        required=True,
        help='exported model (this one is exported there when the folder '
        'has no deploy.json)')
    p.add_argument('--opset', type=int, help='ONNX opset of an export')
    p = sub.add_parser(
        'precision',
        parents=[model, timing],
        help='fp32 vs bf16 (PyTorch) vs fp32 vs int8 (ONNX Runtime), CPU')
    p.add_argument(
        '--model-dir',
        required=True,
        help='fp32 ONNX export (exported there when it has no deploy.json)')
    p.add_argument(
        '--int8-dir',
        required=True,
        help='int8 ONNX export (exported and quantized there when absent)')
    p.add_argument(
        '--quantize-graphs',
        nargs='+',
        default=['image_encoder'],
        help='graphs of the int8 export (default: the image encoder)')
    p.add_argument('--opset', type=int, help='ONNX opset of an export')
    p.add_argument(
        '--quality-samples',
        type=int,
        default=0,
        metavar='N',
        help='also score the first N samples of the config\'s test split '
        '(mIoU, oIoU, pixels equal to fp32; use a trained --checkpoint)')
    p = sub.add_parser(
        'scene-memory',
        parents=[model],
        help='peak RSS and time on large synthetic GeoTIFFs (CPU)')
    p.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[8192, 16384],
        help='scene widths (= heights) in pixels')
    p.add_argument(
        '--repeats',
        type=int,
        default=3,
        help='runs (fresh processes) per scene')
    p.add_argument(
        '--overviews',
        action='store_true',
        help='internal overviews in the scenes')
    p.add_argument(
        '--output-resolution',
        default='working',
        choices=('working', 'native'),
        help='grid of the mask GeoTIFF written')
    p.add_argument(
        '--rss-limit-gb',
        type=float,
        default=6.,
        help='stop a run whose resident memory passes this (default 6)')
    p.add_argument(
        '--work-dir',
        help='folder for the scenes (default: a temporary one); each scene '
        'is deleted once measured')
    p.add_argument('--child', metavar='SCENE', help=argparse.SUPPRESS)
    p.add_argument('--out-dir', help=argparse.SUPPRESS)
    p = sub.add_parser(
        'scene',
        parents=[model],
        help='large synthetic scenes: decimated read vs sliding windows '
        '(hit rate, no-target, peak RSS, windows/s, follow-up cost; CPU)')
    p.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[1024, 2048],
        help='scene widths (= heights) in pixels')
    p.add_argument(
        '--scenes', type=int, default=5, help='scenes per size (seeded)')
    p.add_argument('--seed', type=int, default=0, help='seed of scene 0')
    p.add_argument(
        '--referent-colours',
        default='shared',
        choices=('shared', 'exclusive'),
        help="shared: other objects may have a referent's colour, as in "
        "training; exclusive: the referents' colours are theirs alone")
    p.add_argument(
        '--window-batch',
        type=int,
        default=4,
        help='windows encoded / decoded together (default 4)')
    p.add_argument(
        '--flip-check',
        nargs='+',
        choices=('horizontal', 'vertical', 'diagonal'),
        help='slide methods: flips a window that passes must pass too '
        '(ScenePredictor flip_check; default: none)')
    p.add_argument(
        '--filter-gate',
        type=float,
        help='slide methods: decode only windows whose global text filter '
        'logit reaches this (ScenePredictor filter_gate; default: all)')
    p.add_argument(
        '--max-memory',
        type=float,
        default=DEFAULT_MEMORY_LIMIT / MIB,
        metavar='MIB',
        help='window embeddings held in memory by the slide method; beyond, '
        'in a temporary file (default: ScenePredictor\'s, 1024)')
    p.add_argument(
        '--rss-limit-gb',
        type=float,
        default=6.,
        help='stop a run whose resident memory passes this (default 6)')
    p.add_argument(
        '--work-dir',
        help='folder for the scenes and outputs (default: a temporary one, '
        'deleted at the end)')
    p.add_argument(
        '--keep',
        action='store_true',
        help='keep the scenes, ground truths and masks')
    p.add_argument(
        '--methods',
        nargs='+',
        choices=SCENE_METHODS,
        help='methods to run (default: decimated and slide, plus '
        'slide-onnx with --model-dir)')
    p.add_argument(
        '--model-dir',
        help='ONNX export for slide-onnx (this model is exported there when '
        'the folder has no deploy.json)')
    p.add_argument('--opset', type=int, help='ONNX opset of an export')
    p.add_argument(
        '--child-method', choices=SCENE_METHODS, help=argparse.SUPPRESS)
    p.add_argument('--child-scenes', nargs='+', help=argparse.SUPPRESS)
    p.add_argument('--out-dir', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    err = sub.choices[args.mode].error
    if getattr(args, 'repeats', 1) < 1 or getattr(args, 'warmup', 0) < 0:
        err('--repeats must be >= 1 and --warmup >= 0')
    if min(
            getattr(args, 'batch_size', 1), getattr(args, 'expressions', 1),
            getattr(args, 'scenes', 1), getattr(args, 'window_batch', 1),
            *getattr(args, 'sizes', [256])) < 1:
        err('--batch-size, --expressions, --scenes, --window-batch and '
            '--sizes must be >= 1')
    cuda = getattr(args, 'device', 'cpu').startswith('cuda')
    if cuda and not torch.cuda.is_available():
        err(f'--device {args.device}: CUDA is not available')
    if getattr(args, 'train', False) and args.bf16 and not cuda:
        err('--train --bf16 trains through SkipNonFiniteAmpOptimWrapper '
            "(mmengine's AmpOptimWrapper), which needs --device cuda")
    if args.mode == 'throughput':
        args.warmup = max(args.warmup, 1)
    if args.mode == 'scene' and not args.child_method:
        if args.methods is None:
            args.methods = list(
                SCENE_METHODS[:2]) + (['slide-onnx'] if args.model_dir else [])
        if 'slide-onnx' in args.methods and not args.model_dir:
            err('--methods slide-onnx needs --model-dir')
    return args


def main(argv: Optional[Sequence[str]] = None):
    """Run one mode; returns its figures (also printed)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, 'child', None):
        return scene_child(args)
    if getattr(args, 'child_method', None):
        return scene_bench_child(args)
    return MODES[args.mode](args)


if __name__ == '__main__':
    main()
