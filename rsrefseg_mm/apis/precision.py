"""Inference precision of the PyTorch predictor: fp32, or bf16 where the
hardware computes it natively.

``bf16`` runs the towers, the prompter and SAM under
``torch.autocast(dtype=torch.bfloat16)``: matrix products and convolutions
in bfloat16 (oneDNN's AVX512-BF16 / AMX kernels on x86 CPUs), reductions
and post-processing in float32. A CPU without native bf16 would emulate it,
slower than fp32, so it is refused: x86 CPUs need AVX512-BF16 (Intel Cooper
Lake and later, AMD Zen 4 and later) or AMX (Intel Sapphire Rapids and
later), as ``torch.cpu`` reports them. CUDA devices need bf16 support
(compute capability 8.0 and later).
"""
import collections
import contextlib
import os
import sys
import tempfile
from typing import Callable, ContextManager, Dict, Union

import torch

PRECISIONS = ('fp32', 'bf16')


def cpu_bf16_support() -> dict:
    """What ``torch.cpu`` reports of this CPU's native bf16.

    Returns:
        dict: ``avx512_bf16`` and ``amx`` (AMX tiles) booleans.
    """
    return dict(
        avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
        amx=bool(torch.cpu._is_amx_tile_supported()))


def check_precision(precision: str, device: Union[str, torch.device]) -> str:
    """``precision`` if the device computes it natively.

    Args:
        precision (str): ``'fp32'`` or ``'bf16'``.
        device (str | torch.device): Where the model runs.

    Returns:
        str: ``precision``.

    Raises:
        ValueError: An unknown precision.
        RuntimeError: bf16 on a device without native bf16 (the message
            names what the CPU reports and what is needed).
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got '
                         f'{precision!r}')
    if precision == 'fp32':
        return precision
    device = torch.device(device)
    if device.type == 'cpu':
        support = cpu_bf16_support()
        if not any(support.values()):
            raise RuntimeError(
                "precision='bf16' needs a CPU with native bf16 "
                '(AVX512-BF16 or AMX: Intel Cooper Lake / Sapphire Rapids, '
                'AMD Zen 4 and later); this CPU has neither (torch.cpu: '
                f'{support}), so bf16 would be emulated, slower than fp32: '
                "use precision='fp32'")
    elif device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"precision='bf16': {device} does not support "
                           "bfloat16; use precision='fp32'")
    return precision


def autocast(precision: str, device: Union[str,
                                           torch.device]) -> ContextManager:
    """``torch.autocast`` to bfloat16 for ``'bf16'``, nothing for
    ``'fp32'``."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def onednn_kernels(fn: Callable[[], object]) -> Dict[str, int]:
    """The oneDNN kernels ``fn`` runs, from oneDNN's verbose log.

    oneDNN writes the log to the process's standard output (file
    descriptor 1), which is redirected to a temporary file meanwhile.

    Returns:
        dict: ``'<primitive> <implementation> <src dtype>'`` (e.g.
        ``'matmul brg_matmul:avx10_1_512_amx bf16'``) -> executions.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(
                    torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode(errors='replace').splitlines()
    kernels = collections.Counter()
    for line in lines:
        fields = line.split(',')
        if len(fields) > 8 and fields[2:4] == ['primitive', 'exec']:
            src = fields[8].split(' ')[0].split(':')
            dtype = src[1] if len(src) > 1 else '?'
            kernels[f'{fields[5]} {fields[6]} {dtype}'] += 1
    return dict(kernels)
