"""MergedInferenceLoRALinear: one GEMM at inference, LoRA path otherwise."""
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from rsrefseg_mm.models.peft.lora_linear import MergedInferenceLoRALinear
from rsrefseg_mm.models.peft.tuning import apply_tuning
from helpers import assert_close_to_reference, matmul_atol


def layer(drop_rate=0.0):
    torch.manual_seed(0)
    m = MergedInferenceLoRALinear(
        nn.Linear(32, 48), alpha=8, rank=4, drop_rate=drop_rate)
    nn.init.normal_(m.lora_up.weight)  # LoRA-B starts at zero
    return m


def reference(m, x):
    """mmpretrain's LoRALinear.forward."""
    return m.original_layer(x) + m.lora_up(m.lora_down(x)) * m.scaling


def flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def test_inference_path_is_one_merged_gemm():
    m = layer().eval()
    x = torch.randn(2, 100, 32)
    with torch.no_grad():
        out = m(x)
        ref = reference(m, x)
        merged = flops(lambda: m(x))
    # merged (W + s B A) x vs W x + s B (A x): both within the float32
    # rounding bound of the two products
    atol = matmul_atol(x, m.original_layer.weight.T) + m.scaling * \
        matmul_atol(x, m.lora_down.weight.T, m.lora_up.weight.T)
    assert_close_to_reference(out, ref, atol)
    assert (ref - m.original_layer(x)).abs().max() > 0.1  # LoRA counted
    # merge (48x4x32) + one (200x32x48) GEMM, no LoRA-branch GEMMs
    assert merged == 2 * (48 * 4 * 32 + 200 * 32 * 48)


def test_training_and_grad_paths_keep_the_lora_branch():
    m = layer(drop_rate=0.5).train()
    x = torch.randn(2, 100, 32)
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(1)
    b = m.original_layer(x) + m.lora_up(m.lora_down(
        m.lora_dropout(x))) * m.scaling
    assert torch.equal(a, b)  # dropout on the LoRA branch, as mmpretrain
    a.sum().backward()
    assert m.lora_up.weight.grad is not None
    m.eval()  # eval with autograd (e.g. attribution): gradients still flow
    m.zero_grad()
    m(x).sum().backward()
    assert m.lora_down.weight.grad.abs().sum() > 0


def test_apply_tuning_uses_it_and_keeps_state_dict_keys():
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    keys = set(net.state_dict())
    apply_tuning(net, 'lora', targets=['0'], rank=2, alpha=2, drop_rate=0.)
    assert isinstance(net[0], MergedInferenceLoRALinear)
    assert set(net.state_dict()) == (keys - {'0.weight', '0.bias'}) | {
        '0.original_layer.weight', '0.original_layer.bias',
        '0.lora_down.weight', '0.lora_up.weight'
    }
