"""TrainableParamsOptimWrapperConstructor: the optimizer holds the
trainable parameters only (fused on CUDA); frozen base weights get no
gradient and no weight-gradient GEMM."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from torch.utils.flop_counter import FlopCounterMode

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine.optimizers import \
    TrainableParamsOptimWrapperConstructor
from rsrefseg_mm.models.peft.tuning import apply_tuning
from helpers import TINY_CONFIG, referring_batch

LORA = dict(mode='lora', rank=4, alpha=4, drop_rate=0.)


def lora_model():
    """The tiny model with LoRA on every tower (base weights frozen)."""
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.backbone.image_tuning = dict(
        **LORA, targets=['attn.qkv', 'attn.proj'])
    cfg.model.backbone.text_tuning = dict(
        **LORA, targets=['attn.qkv', 'attn.proj'])
    cfg.model.decode_head.encoder_tuning = dict(
        **LORA, targets=['qkv', 'proj', 'lin1', 'lin2'])
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).train()


def build(model, **optimizer):
    init_default_scope('mmseg')
    return build_optim_wrapper(
        model,
        dict(
            type='SkipNonFiniteOptimWrapper',
            constructor='TrainableParamsOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, **optimizer)))


def test_optimizer_holds_trainable_parameters_only():
    model = lora_model()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) > 20 and any('original_layer' in n for n in frozen)
    ow = build(model)
    held = [p for g in ow.optimizer.param_groups for p in g['params']]
    assert {id(p) for p in held} == trainable and len(held) == len(trainable)
    assert not ow.optimizer.defaults.get('fused')  # CPU: not fused
    # paramwise_cfg: groups per parameter, frozen ones dropped
    ow = build_optim_wrapper(
        model,
        dict(
            constructor='TrainableParamsOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0.)))
    held = [p for g in ow.optimizer.param_groups for p in g['params']]
    assert {id(p) for p in held} == trainable
    norm_groups = [
        g for g in ow.optimizer.param_groups if g['weight_decay'] == 0.
    ]
    assert norm_groups  # paramwise settings kept


def test_fused_only_on_cuda():
    fused = TrainableParamsOptimWrapperConstructor.fused_default
    cuda = [SimpleNamespace(device=torch.device('cuda', 0))] * 2
    cpu = [SimpleNamespace(device=torch.device('cpu'))]
    assert fused(dict(type='AdamW'), cuda) is True
    assert fused(dict(type=torch.optim.AdamW), cuda) is True
    assert fused(dict(type='AdamW'), cpu) is None
    assert fused(dict(type='AdamW'), cuda + cpu) is None
    assert fused(dict(type='AdamW', fused=False), cuda) is None
    assert fused(dict(type='AdamW', foreach=True), cuda) is None
    assert fused(dict(type='LAMB'), cuda) is None


def test_no_trainable_parameter_is_an_error():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameter'):
        build(model)


def test_train_step_leaves_frozen_weights_without_gradients():
    """The steps of ``model.train_step``, with the gradients inspected
    before the optimizer step clears them."""
    model = lora_model()
    ow = build(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ow.optim_context(model):
        data = model.data_preprocessor(referring_batch(), True)
        losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    ow.backward(loss)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert with_grad and not with_grad & frozen
    assert any('lora_' in n for n in with_grad)
    ow.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, before[n]), n
    state_ids = {id(p) for p in ow.optimizer.state}
    assert state_ids == {
        id(p)
        for n, p in model.named_parameters() if n in with_grad
    }


def test_lora_backward_computes_no_base_weight_gradient():
    """A LoRA layer's backward runs the input-gradient GEMM of its frozen
    base weight but no weight-gradient GEMM: ~1x its forward FLOPs, where
    full tuning takes ~2x."""
    torch.manual_seed(0)

    def backward_over_forward(mode):
        layer = torch.nn.Sequential(torch.nn.Linear(256, 256))
        apply_tuning(
            layer, mode=mode, targets=['0'], rank=4, alpha=4, drop_rate=0.)
        x = torch.randn(512, 256, requires_grad=True)
        with FlopCounterMode(display=False) as fwd:
            y = layer(x)
        with FlopCounterMode(display=False) as bwd:
            y.square().sum().backward()
        return bwd.get_total_flops() / fwd.get_total_flops()

    lora, full = backward_over_forward('lora'), backward_over_forward('full')
    assert full == pytest.approx(2.0, rel=0.01)
    assert lora < 1.1
