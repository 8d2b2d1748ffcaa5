"""LoRAConv2d and conv targets of apply_lora / apply_tuning."""
import pytest
import torch
import torch.nn as nn

from rsrefseg_mm.models.peft import LoRAConv2d
from rsrefseg_mm.models.peft.tuning import apply_lora, apply_tuning
from helpers import assert_close_to_reference


def conv3():
    torch.manual_seed(0)
    return nn.Conv2d(6, 5, 3, padding=1, stride=2, bias=True)


def test_starts_as_the_original_and_keeps_its_keys():
    conv = conv3()
    lora = LoRAConv2d(conv, alpha=4, rank=2, drop_rate=0.)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(lora(x), conv(x))
    assert set(lora.state_dict()) == {
        'original_layer.weight', 'original_layer.bias', 'lora_down.weight',
        'lora_up.weight'
    }
    assert lora.lora_down.weight.shape == (2, 6, 3, 3)
    assert lora.lora_up.weight.shape == (5, 2, 1, 1)


def test_update_and_merged_inference_agree():
    conv = conv3()
    lora = LoRAConv2d(conv, alpha=4, rank=2, drop_rate=0.)
    with torch.no_grad():
        lora.lora_up.weight.normal_()
    x = torch.randn(2, 6, 9, 9)
    lora.train()
    trained = lora(x)
    # explicit reference: W0*x + (alpha/r) * up(down(x))
    ref = conv(x) + 2.0 * nn.functional.conv2d(
        nn.functional.conv2d(x, lora.lora_down.weight, stride=2, padding=1),
        lora.lora_up.weight)
    torch.testing.assert_close(trained, ref)
    assert not torch.allclose(trained, conv(x))
    lora.eval()
    with torch.no_grad():
        merged = lora(x)
    assert_close_to_reference(merged, trained)


def test_dropout_applies_only_in_training():
    lora = LoRAConv2d(conv3(), alpha=2, rank=2, drop_rate=0.5)
    with torch.no_grad():
        lora.lora_up.weight.normal_()
    x = torch.randn(1, 6, 9, 9)
    lora.train()
    torch.manual_seed(1)
    a = lora(x)
    torch.manual_seed(2)
    b = lora(x)
    assert not torch.allclose(a, b)


def test_apply_lora_convs_only_by_full_name():
    net = nn.Module()
    net.patch_embed = nn.Module()
    net.patch_embed.proj = nn.Conv2d(3, 4, 2, stride=2)
    net.attn = nn.Module()
    net.attn.proj = nn.Linear(4, 4)
    net.neck = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3))
    n = apply_lora(net, ['proj', 'neck.0', 'neck.2'], rank=2, alpha=2)
    assert n == 3
    assert isinstance(net.patch_embed.proj, nn.Conv2d)  # bare suffix: no
    assert isinstance(net.neck[0], LoRAConv2d)
    assert isinstance(net.neck[2], LoRAConv2d)
    assert not isinstance(net.attn.proj, nn.Linear)


def test_apply_tuning_trains_only_lora_and_reports_settings():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3))
    resolved = apply_tuning(
        net,
        mode='lora',
        name='net',
        rank=2,
        alpha=2,
        drop_rate=0.,
        default_targets=['0', '1'])
    assert resolved['targets'] == ['0', '1']
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {
        '0.lora_down.weight', '0.lora_up.weight', '1.lora_down.weight',
        '1.lora_up.weight'
    }
    with pytest.raises(ValueError, match="unknown keys \\['r'\\]"):
        apply_tuning(nn.Linear(2, 2), mode='lora', name='x', r=4)
    # inherited LoRA keys are ignored when a config switches to 'full'
    full = nn.Linear(2, 2)
    assert apply_tuning(
        full, mode='full', name='x', rank=4) == dict(mode='full')
    assert all(p.requires_grad for p in full.parameters())
