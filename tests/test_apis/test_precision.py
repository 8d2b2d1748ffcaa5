"""bf16 inference of the PyTorch predictor: refused by name on a CPU
without native bf16; where the CPU has it, the answers stay close to fp32's
and the matrix products really run in bfloat16."""
import numpy as np
import pytest
import torch

from rsrefseg_mm.apis import ReferringPredictor
from rsrefseg_mm.apis.precision import check_precision, cpu_bf16_support
from helpers import TINY_CONFIG, perturbed_model

NATIVE_BF16 = any(cpu_bf16_support().values())


@pytest.fixture(scope='module')
def model():
    model = perturbed_model(TINY_CONFIG)
    return model


def test_bf16_refused_on_a_cpu_without_native_bf16(model, monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    with pytest.raises(RuntimeError, match='needs a CPU with native bf16'):
        ReferringPredictor(model, precision='bf16')
    # fp32 needs nothing
    assert ReferringPredictor(model, precision='fp32').precision == 'fp32'
    with pytest.raises(ValueError, match='precision must be one of'):
        check_precision('int8', 'cpu')


@pytest.mark.skipif(not NATIVE_BF16, reason='this CPU has no native bf16')
def test_bf16_answers_close_to_fp32_and_runs_in_bf16(model, monkeypatch):
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)
    texts = ['the red circle', 'the blue square']
    probs = {}
    for precision in ('fp32', 'bf16'):
        predictor = ReferringPredictor(model, precision=precision)
        predictor.set_image(image)
        probs[precision] = np.stack(
            [r.seg_logits.data[0].numpy() for r in predictor.predict(texts)])
    assert probs['bf16'].dtype == np.float32
    diff = np.abs(probs['bf16'] - probs['fp32'])
    # bfloat16 keeps 8 bits of mantissa: close, but not equal
    assert 0 < diff.max() < 0.05
    assert ((probs['bf16'] > 0.5) == (probs['fp32'] > 0.5)).mean() > 0.98
    seen = []
    linear = torch.nn.functional.linear

    def spy(x, *args, **kwargs):
        out = linear(x, *args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, 'linear', spy)
    predictor = ReferringPredictor(model, precision='bf16')
    predictor.set_image(image)
    assert torch.bfloat16 in seen


@pytest.mark.skipif(not NATIVE_BF16, reason='this CPU has no native bf16')
def test_onednn_kernels_name_the_bf16_kernels():
    from rsrefseg_mm.apis.precision import autocast, onednn_kernels
    linear = torch.nn.Linear(64, 64)
    x = torch.randn(32, 64)

    def run(precision):
        with torch.no_grad(), autocast(precision, 'cpu'):
            linear(x)

    kernels = onednn_kernels(lambda: run('bf16'))
    assert any(
        k.startswith('matmul') and k.endswith(' bf16')
        for k in kernels), kernels
    assert not any(
        k.endswith(' bf16') for k in onednn_kernels(lambda: run('fp32')))
