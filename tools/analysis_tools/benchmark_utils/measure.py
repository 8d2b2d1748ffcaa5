"""Timing, FLOP counting and peak-memory probes for ``benchmark.py``."""
import resource
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

STAGES = ('encoder towers', 'neck', 'SAM encoder', 'SAM prompt enc + decoder')


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

    Wraps, on the instances, ``backbone.encode_image`` and
    ``backbone.encode_text`` (together the encoder towers),
    ``neck.forward``, ``decode_head.forward`` and
    ``decode_head.encode_image``; the prompt
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
        for name, owner, attr in (('encoder towers', model.backbone,
                                   'encode_image'),
                                  ('encoder towers', model.backbone,
                                   'encode_text'), ('neck', model.neck,
                                                    'forward'), ('head', head,
                                                                 'forward'),
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
