"""torch.compile of the hot paths: compiled == eager on CPU (tiny model,
fused windowed SAM block), target resolution, CompileHotPathsHook and the
--compile switch."""
import copy
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, MODELS, RUNNERS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import (CompileHotPathsHook, RSRefSegRunner,
                                compile_hot_paths, default_compile_targets)
from rsrefseg_mm.utils import apply_compile_arg, drop_pretrained_checkpoints
from helpers import TINY_CONFIG as TINY_CFG
from helpers import assert_close_to_reference, sam_block_pair

TEXTS = ['the red circle', 'the white object']


def tiny_model():
    cfg = Config.fromfile(TINY_CFG)
    drop_pretrained_checkpoints(cfg.model)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def batch(n=2, size=128):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(1)
    images = torch.rand(n, 3, size, size) * 255
    samples = []
    for i in range(n):
        s = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size),
                text=TEXTS[i % len(TEXTS)]))
        gt = torch.zeros(1, size, size, dtype=torch.long)
        gt[:, 20:60, 30 + 10 * i:80] = 1
        s.gt_sem_seg = PixelData(data=gt)
        samples.append(s)
    return images, samples


def test_targets_resolve_and_errors():
    model = tiny_model()
    assert default_compile_targets(model) == [
        'backbone.visual', 'backbone.text', 'decode_head._encode'
    ]
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        compile_hot_paths(model, ['decode_head.nope'])
    with pytest.raises(ValueError, match='no sub-module'):
        compile_hot_paths(model, ['head.image_encoder'])
    with pytest.raises(ValueError, match='declares no compile targets'):
        compile_hot_paths(torch.nn.Linear(2, 2))
    names = compile_hot_paths(model, backend='eager')
    assert names == default_compile_targets(model)
    assert model.backbone.visual._compiled_call_impl is not None
    assert 'torch._dynamo' in type(model.decode_head._encode).__module__ or \
        hasattr(model.decode_head._encode, '_torchdynamo_orig_callable')
    # state-dict keys unchanged (checkpoints stay loadable)
    assert model.state_dict().keys() == tiny_model().state_dict().keys()


def test_compile_arg_adds_or_updates_the_hook():
    other = dict(type='ReferringVisualizationHook')
    hook = dict(type='CompileHotPathsHook', backend='aot_eager', targets=['x'])
    cfg = Config(dict(custom_hooks=[other, hook]))
    apply_compile_arg(cfg, 'reduce-overhead')
    assert cfg.custom_hooks == [other, dict(hook, mode='reduce-overhead')]
    cfg = Config(dict())
    apply_compile_arg(cfg, 'default')
    assert cfg.custom_hooks == [dict(type='CompileHotPathsHook')]
    apply_compile_arg(cfg, 'max-autotune')
    assert cfg.custom_hooks == [
        dict(type='CompileHotPathsHook', mode='max-autotune')
    ]


class _Logger:

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def test_hook_compiles_once_before_the_first_loop():
    model = tiny_model()
    hook = HOOKS.build(
        dict(
            type='CompileHotPathsHook',
            backend='eager',
            targets=['backbone.visual', 'decode_head._encode']))
    assert isinstance(hook, CompileHotPathsHook)
    runner = SimpleNamespace(model=model, logger=_Logger())
    encode = model.decode_head._encode
    hook.before_train(runner)
    assert hook.compiled_targets == ['backbone.visual', 'decode_head._encode']
    assert model.backbone.visual._compiled_call_impl is not None
    assert model.backbone.text._compiled_call_impl is None
    compiled = model.decode_head._encode
    assert compiled is not encode
    assert runner.logger.lines == [
        "torch.compile({'backend': 'eager'}) of ['backbone.visual', "
        "'decode_head._encode'] (before train_step); the first iterations "
        'compile and are slow'
    ]
    # validation during training and a later test reuse the graphs
    hook.before_val(runner)
    hook.before_test(runner)
    assert model.decode_head._encode is compiled
    assert len(runner.logger.lines) == 1
    # a test-only run compiles before its test loop
    test_hook = CompileHotPathsHook(backend='eager')
    runner = SimpleNamespace(model=tiny_model(), logger=_Logger())
    test_hook.before_test(runner)
    assert test_hook.compiled_targets == default_compile_targets(runner.model)
    assert '(before test_step)' in runner.logger.lines[0]


def test_runner_type_selects_the_runner():
    """`runner_type = 'RSRefSegRunner'` of the default runtime selects it
    for code that builds runners from the registry."""
    cfg = Config.fromfile(TINY_CFG)
    assert cfg.runner_type == 'RSRefSegRunner'
    assert RUNNERS.get(cfg.runner_type) is RSRefSegRunner


@pytest.mark.compile
def test_inductor_inference_matches_eager():
    model = tiny_model().eval()
    images, samples = batch()
    torch._dynamo.reset()
    with torch.no_grad():
        ref = model(images, samples, mode='tensor')
        compile_hot_paths(model)  # Inductor, CPU C++ codegen
        out = model(images, samples, mode='tensor')
    # the three hot paths ran as compiled graphs
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 3
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-4 * max(1., ref.abs().max())


@pytest.mark.compile
def test_compiled_training_step_matches_eager():
    """Loss and every gradient, tiny model, AOTAutograd graphs."""
    eager = tiny_model().train()
    compiled = copy.deepcopy(eager)
    compile_hot_paths(compiled, backend='aot_eager')
    images, samples = batch()
    torch._dynamo.reset()
    losses = []
    for model in (eager, compiled):
        loss = model.loss(images, samples)
        total = sum(v for k, v in loss.items() if 'loss' in k)
        total.backward()
        losses.append(total.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 3
    grads = {
        n: p.grad
        for n, p in compiled.named_parameters() if p.grad is not None
    }
    n_checked = 0
    for name, p in eager.named_parameters():
        if p.grad is None:
            assert name not in grads, name
            continue
        assert torch.allclose(p.grad, grads[name], atol=1e-4, rtol=1e-4), \
            name
        n_checked += 1
    assert n_checked > 50


@pytest.mark.compile
def test_inductor_fused_window_block_matches_eager():
    """The GPU default path of a padded windowed block (one-pass window
    ops in their compile form, rel-pos folded into q/k), Inductor forward
    and backward."""
    _, fast = sam_block_pair(dim=32, heads=2, grid=32, ws=7)
    fast.fused_window_min_tokens = 1
    fast.attn.rel_pos_mode = 'augmented'
    x = torch.randn(1, 32, 32, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ref = fast(x)
    ref.square().mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in fast.named_parameters()}
    fast.zero_grad()
    out = torch.compile(fast)(x2)
    out.square().mean().backward()
    assert_close_to_reference(out, ref)
    assert_close_to_reference(x2.grad, x.grad, what='input')
    for name, p in fast.named_parameters():
        assert_close_to_reference(p.grad, ref_grads[name], what=name)
