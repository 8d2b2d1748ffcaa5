"""The measurements of ``gpu_benchmark.py``: matmul ceiling, eager and
compiled inference / training runs, and the largest batch within a memory
cap."""
import time
from typing import Callable, Dict

import torch

from .measure import amp_context, synchronize
from .model import make_samples
from .modes import benchmark_inference, benchmark_train_steps


def log(msg: str) -> None:
    """Print a time-stamped progress line (flushed)."""
    print(f'[gpu_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def matmul_ceiling(device: str, n: int = 8192, iters: int = 20) -> float:
    """Dense bf16 matmul throughput, median of 3 timed bursts.

    Args:
        device (str): A CUDA device.
        n (int): Side of the square matrices.
        iters (int): Products per burst.

    Returns:
        float: TFLOP/s.
    """
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(3):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        synchronize(device)
        rates.append(2 * n**3 * iters / (time.perf_counter() - t0) / 1e12)
    return sorted(rates)[1]


def set_rel_pos_mode(model: torch.nn.Module, mode: str) -> None:
    """Set ``rel_pos_mode`` of every SAM attention layer.

    Args:
        model (nn.Module): An RSRefSeg.
        mode (str): ``'auto'`` (the per-device default, stored as None),
            ``'mask'``, ``'chunked'`` or ``'augmented'``.
    """
    from rsrefseg_mm.models.sam import SAMFastAttention
    for m in model.modules():
        if isinstance(m, SAMFastAttention):
            m.rel_pos_mode = None if mode == 'auto' else mode


def largest_batch(fits: Callable[[int], bool],
                  start: int = 8,
                  limit: int = 512,
                  granularity: int = 4) -> int:
    """Largest batch size ``b <= limit`` with ``fits(b)``.

    Assumes that fitting is monotonic: doubles from ``start``, then bisects
    down to ``granularity``.

    Args:
        fits (callable): Batch size -> whether one step runs within the
            memory cap.
        start (int): First size tried.
        limit (int): Largest size tried.
        granularity (int): Precision of the bisection.

    Returns:
        int: The size; 0 when not even 1 fits.
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


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is a CUDA out-of-memory error."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or \
        'out of memory' in str(e)


def find_max_batches(model, cfg, size, args) -> Dict:
    """Largest inference and training batches within the memory cap.

    The cap is ``args.memory_cap_gib``, applied with
    ``torch.cuda.set_per_process_memory_fraction`` (so that a larger card
    answers for a smaller one).

    Args:
        model (nn.Module): The RSRefSeg on ``args.device``.
        cfg (Config): Its config (optimizer of the training steps).
        size (tuple[int, int]): Input size (H, W).
        args (Namespace): ``gpu_benchmark.py``'s arguments.

    Returns:
        dict: ``memory_cap_gib``, ``fraction`` and ``infer`` / ``train``
        (per ``args.find_max_batch``).
    """
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
                if not is_oom(e):
                    raise
                return False
            finally:
                # a step cut short by OOM leaves partial gradients behind
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()

        return fits

    def infer(B):
        images = torch.rand(B, 3, *size, device=dev) * 255
        with torch.no_grad(), amp_context(dev, True):
            model.eval()(images, make_samples(B, size, dev), mode='predict')

    def train(B):
        benchmark_train_steps(
            model, cfg, size, B, dev, True, 0, 1, count_flops=False)

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
    """Eager bf16 inference at each batch size.

    Returns:
        dict: :func:`benchmark_inference` results keyed by ``str(batch)``
        (FLOPs counted at the largest batch when ``count_flops``).
    """
    dev, res = args.device, {}
    for B in batches:
        torch.manual_seed(0)
        images = torch.rand(B, 3, *size, device=dev) * 255
        samples = make_samples(B, size, dev)
        res[str(B)] = benchmark_inference(
            model,
            images,
            samples,
            dev,
            True,
            args.warmup,
            args.repeats,
            count_flops=count_flops and B == max(batches))
        del images
    return res


def run_training(model, cfg, size, args, count_flops=True) -> Dict:
    """LoRA training steps at ``args.train_batch`` per ``args.with_cp``.

    bf16 (mmengine's ``AmpOptimWrapper``) on CUDA, fp32 on CPU.

    Returns:
        dict: :func:`benchmark_train_steps` results keyed by
        ``str(with_cp)``; None for a setting that ran out of memory.
    """
    dev, res = args.device, {}
    cuda = dev.startswith('cuda')
    settings = {'off': [False], 'on': [True], 'both': [False, True]}
    for with_cp in settings[args.with_cp]:
        model.decode_head.with_cp = with_cp
        if cuda:
            torch.cuda.empty_cache()
        try:
            res[str(with_cp)] = benchmark_train_steps(
                model,
                cfg,
                size,
                args.train_batch,
                dev,
                cuda,
                args.warmup,
                args.repeats,
                count_flops=count_flops and not with_cp)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not is_oom(e):
                raise
            log(f'train with_cp={with_cp}: out of memory')
            res[str(with_cp)] = None
    model.decode_head.with_cp = False
    model.eval()
    return res


def run_compiled(model, cfg, size, args) -> Dict:
    """Compile the model's hot paths, then time inference and training.

    Args:
        model (nn.Module): The RSRefSeg (compiled in place).
        cfg (Config): Its config.
        size (tuple[int, int]): Input size (H, W).
        args (Namespace): ``gpu_benchmark.py``'s arguments (``compile``,
            ``compile_backend``, batches, repeats).

    Returns:
        dict: ``kwargs`` and ``targets`` of the compilation, the first
        inference call's time ``compile_infer_s``, ``inference`` and
        (unless skipped) ``compile_train_s`` and ``train``.
    """
    from rsrefseg_mm.engine import compile_hot_paths
    kwargs = {} if args.compile == 'default' else dict(mode=args.compile)
    if args.compile_backend:
        kwargs['backend'] = args.compile_backend
    set_rel_pos_mode(model, 'auto')
    targets = compile_hot_paths(model, **kwargs)
    dev, B = args.device, args.infer_batch
    amp_train = dev.startswith('cuda')
    torch.manual_seed(0)
    images = torch.rand(B, 3, *size, device=dev) * 255
    samples = make_samples(B, size, dev)
    t0 = time.perf_counter()
    with torch.no_grad(), amp_context(dev, True):
        model(images, samples, mode='predict')
    synchronize(dev)
    res = dict(
        kwargs={k: str(v)
                for k, v in kwargs.items()},
        targets=targets,
        compile_infer_s=time.perf_counter() - t0)
    log(f'compiled {targets} with {kwargs}: first inference call '
        f'{res["compile_infer_s"]:.0f} s')
    res['inference'] = benchmark_inference(
        model,
        images,
        samples,
        dev,
        True,
        args.warmup,
        args.repeats,
        count_flops=False)
    log(f'compiled inference batch {B}: '
        f'{res["inference"]["images_per_s"]:.1f} img/s')
    if not args.skip_train and args.compile != 'reduce-overhead':
        t0 = time.perf_counter()
        benchmark_train_steps(
            model,
            cfg,
            size,
            args.train_batch,
            dev,
            amp_train,
            0,
            1,
            count_flops=False)
        synchronize(dev)
        res['compile_train_s'] = time.perf_counter() - t0
        res['train'] = benchmark_train_steps(
            model,
            cfg,
            size,
            args.train_batch,
            dev,
            amp_train,
            args.warmup,
            args.repeats,
            count_flops=False)
        model.eval()
        log(f'compiled training batch {args.train_batch}: '
            f'{res["train"]["images_per_s"]:.1f} img/s (first step '
            f'{res["compile_train_s"]:.0f} s)')
    return res
