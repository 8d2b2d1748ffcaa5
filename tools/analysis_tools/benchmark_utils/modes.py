"""The measurements of ``benchmark.py``: inference, the SAM encoder against
stock segment-anything, training steps."""
import copy
import time

import numpy as np
import torch

from rsrefseg_mm.utils import track
from .measure import (PeakMemory, StageProbe, amp_context, flop_counter,
                      summarize, synchronize)
from .model import make_samples


def benchmark_inference(model,
                        inputs,
                        samples,
                        device,
                        amp,
                        warmup,
                        repeats,
                        count_flops=True,
                        progress=None) -> dict:
    """Time ``model(inputs, samples, mode='predict')``.

    ``progress`` is :func:`rsrefseg_mm.utils.track`'s ``force`` (None: a
    bar with rate and ETA on terminals only); the same in the other modes.

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
        for i in track(
                range(warmup), 'inference warm-up', unit='run',
                force=progress):
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
            for _ in track(
                    range(repeats), 'inference timed', unit='run',
                    force=progress):
                synchronize(device)
                t0 = time.perf_counter()
                with probe.iteration():
                    run_once()
                synchronize(device)
                latencies.append(time.perf_counter() - t0)
    finally:
        probe.remove()
    lat = summarize(latencies)
    flops = {k: v / batch_size for k, v in probe.stage_flops().items()}
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


def benchmark_stock(model,
                    images,
                    device,
                    amp,
                    warmup,
                    repeats,
                    progress=None) -> dict:
    """SAM image encoder vs stock segment-anything on the same input.

    Three encoders hold the same function: ``stock`` (segment-anything's
    ``ImageEncoderViT``, LoRA merged into its weights), ``stock+sdpa``
    (the same module with only the attention swapped to
    :class:`SAMFastAttention`) and ``ours`` (the encoder as configured:
    fast attention and unmerged LoRA layers; omitted when it has no LoRA).
    Repeats are interleaved, rotating the order.
    """
    from rsrefseg_mm.models.peft.tuning import LoRALinear
    from rsrefseg_mm.models.sam.sam_builder import build_sam_modules
    from rsrefseg_mm.models.sam.sam_fast_attention import enable_fast_attention
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
        for r in track(
                range(repeats),
                'SAM encoder vs stock',
                unit='round',
                force=progress):
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
    """AdamW of the config (fallback lr 1e-4, wd 0.05) through the config's
    optimizer-wrapper constructor, bf16 when ``amp``."""
    from mmengine.optim import build_optim_wrapper as _build
    optimizer = copy.deepcopy(
        cfg.get('optim_wrapper',
                {}).get('optimizer',
                        dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    ow = dict(optimizer=optimizer)
    constructor = cfg.get('optim_wrapper', {}).get('constructor')
    if constructor:
        ow['constructor'] = constructor
    if amp:
        ow.update(type='SkipNonFiniteAmpOptimWrapper', dtype='bfloat16')
    else:
        ow.update(type='OptimWrapper')
    return _build(model, ow)


def benchmark_train_steps(model,
                          cfg,
                          size,
                          batch_size,
                          device,
                          amp,
                          warmup,
                          repeats,
                          count_flops=True,
                          progress=None) -> dict:
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
    for i in track(
            range(warmup), 'training warm-up', unit='step', force=progress):
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
        for _ in track(
                range(repeats), 'training timed', unit='step', force=progress):
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
