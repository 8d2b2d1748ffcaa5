"""The Markdown report of ``gpu_benchmark.py`` and its MFU figures.

MFU = achieved FLOP/s / peak. Counted FLOPs come from ``FlopCounterMode``
over the executed ops (one multiply-add = 2 FLOPs). RSRefSeg-b at 1024
also gets nominal figures: inference 1000 G per image, i.e. the SAM ViT-B
image encoder at 1024 (972 G counted on segment-anything's encoder) + 28 G
allotted to the CLIP ViT-B/16 towers (which count 35.1 G for the image
tower at 224 + 6.0 G for the text tower; the 1000 G reference keeps MFU
figures comparable between runs); a training step costs ~3x the forward
FLOPs of the trained parts (forward + input gradients + weight gradients),
and every RSRefSeg-b tower is LoRA-tuned, so 3000 G per image. With LoRA
the frozen base weights get no weight gradient, so a step executes ~2x
the forward (the counted column).
"""
from typing import Dict, List, Optional

from .measure import STAGES
from .report import fmt_g

#: SAM ViT-B image encoder at 1024 (FlopCounterMode) + CLIP-B/16 28 G
NOMINAL_INFER_GFLOPS = 972 + 28
#: forward + input gradients + weight gradients of the trained parts
TRAIN_FACTOR = 3


def nominal_infer_flops(cfg, size) -> Optional[float]:
    """Nominal inference FLOPs per image of RSRefSeg-b at 1024.

    Args:
        cfg (Config): A model config.
        size (tuple[int, int]): Input size (H, W).

    Returns:
        float | None: FLOPs for SAM ViT-B + CLIP ViT-B/16 at 1024 x 1024,
        None for other configs.
    """
    head, backbone = cfg.model.decode_head, cfg.model.backbone
    if head.get('sam_arch') == 'vit_b' and \
            backbone.get('arch') == 'ViT-B/16' and tuple(size) == (1024, 1024):
        return NOMINAL_INFER_GFLOPS * 1e9
    return None


def mfu(flops_per_image: Optional[float], images_per_s: float,
        peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation, None when a factor is unknown."""
    if not flops_per_image or not peak_tflops:
        return None
    return flops_per_image * images_per_s / (peak_tflops * 1e12)


def pct(x: Optional[float]) -> str:
    return '-' if x is None else f'{100 * x:.1f} %'


def _throughput_table(res: Dict, args, big: Dict) -> List[str]:
    peak, ceil = args.peak_tflops, res['matmul_tflops']
    lines = [
        '| run | batch | images/s | median ms/batch | peak mem (GiB) | '
        f'GFLOPs/img counted | MFU counted / {peak:.0f} TFLOP/s | '
        f'GFLOPs/img nominal | MFU nominal / {peak:.0f} TFLOP/s | '
        'MFU nominal / measured ceiling |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    nominal = res.get('nominal_infer_flops')
    first = res['eager'][args.rel_pos_modes[0]]
    counted_inf = sum(big['flops'].get(s, 0) for s in STAGES) or None
    counted_train = None
    for r in (first.get('train') or {}).values():
        if r and r.get('flops_per_image'):
            counted_train = r['flops_per_image']
    train_nominal = TRAIN_FACTOR * nominal if nominal else None

    def row(name, B, ips, lat, mem, design, counted):
        lines.append(
            f'| {name} | {B} | {ips:.1f} | {1e3 * lat["median"]:.1f} | '
            f'{mem / 2**30:.1f} | {fmt_g(counted)} | '
            f'{pct(mfu(counted, ips, peak))} | {fmt_g(design)} | '
            f'{pct(mfu(design, ips, peak))} | {pct(mfu(design, ips, ceil))} '
            '|')

    for mode, run in res['eager'].items():
        for B, r in run['inference'].items():
            row(f'inference, eager, rel_pos_mode={mode}', B, r['images_per_s'],
                r['latency'], r['memory']['peak'], nominal, counted_inf)
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
    return lines


def _authors_lines(res: Dict, big: Dict) -> List[str]:
    au = res['authors']
    ours = dict(eager=big['images_per_s'])
    if res.get('compiled'):
        ours['compiled'] = res['compiled']['inference']['images_per_s']
    lines = [
        '', "Authors' compute path (transformers SamVisionModel + "
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
    return lines


def gpu_report(res: Dict, args) -> str:
    """Markdown tables of a ``gpu_benchmark.py`` run.

    Args:
        res (dict): The run's results (``gpu_benchmark.json``).
        args (Namespace): Its arguments.

    Returns:
        str: Environment line, throughput / MFU table, stage split,
        compile times, the authors' path, largest batches, the SAM encoder
        against stock, and the MFU definitions.
    """
    ceil = res['matmul_tflops']
    big = res['eager'][args.rel_pos_modes[0]]['inference'][str(
        args.infer_batch)]
    precision = 'bf16 autocast' if args.device.startswith('cuda') else \
        'bf16 autocast inference, fp32 training'
    lines = [
        f'### RSRefSeg on one device ({res["config"]})', '',
        f'{res["env"]}; random weights, {res["size"][0]}x{res["size"][1]} '
        f'inputs, {precision}, {args.repeats} timed repeats after '
        f'{args.warmup} warm-up, medians; SDPA flash/efficient kernels '
        'enabled.'
    ]
    if ceil:
        lines.append(f'Dense bf16 matmul ceiling measured: {ceil:.0f} TFLOP/s')
    lines += [''] + _throughput_table(res, args, big)
    lines += [
        '', f'Inference stages, eager, rel_pos_mode='
        f'{args.rel_pos_modes[0]}, batch {args.infer_batch} (synchronised '
        'at stage boundaries):', '',
        '| stage | median ms/batch | GFLOPs/image |', '| --- | --- | --- |'
    ]
    for s in STAGES:
        lines.append(f'| {s} | {1e3 * big["stages"].get(s, 0):.1f} | '
                     f'{fmt_g(big["flops"].get(s))} |')
    comp = res.get('compiled')
    if comp:
        lines += [
            '', f'Compiled {comp["targets"]} with {comp["kwargs"]}: first '
            f'inference call {comp["compile_infer_s"]:.0f} s' +
            (f', first training step {comp["compile_train_s"]:.0f} s'
             if 'compile_train_s' in comp else '') + ' (compile time).'
        ]
    if res.get('authors'):
        lines += _authors_lines(res, big)
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
