"""Fixtures of the optimizer-wrapper tests."""
import pytest
from mmengine.device import (is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.optim.optimizer import amp_optimizer_wrapper


@pytest.fixture
def amp_on_cpu(monkeypatch):
    """Let mmengine's ``AmpOptimWrapper`` be built without an accelerator.

    Its constructor asserts a GPU / NPU / MLU / MUSA device; everything else
    it does runs on CPU (``torch.autocast('cpu', torch.bfloat16)``, and a
    ``torch.cuda.amp.GradScaler`` that disables itself without CUDA). With
    an accelerator, the wrapper would autocast and scale on it, not on the
    CPU models of these tests: they are skipped there.
    """
    if (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        pytest.skip('CPU-only check of the AMP wrapper')
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
