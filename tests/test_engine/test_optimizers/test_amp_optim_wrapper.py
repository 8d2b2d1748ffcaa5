"""SkipNonFiniteAmpOptimWrapper (mmengine's AmpOptimWrapper + the guard)
and tools/train.py --amp."""
import pytest
import torch
from mmengine.device import is_cuda_available
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import SkipNonFiniteAmpOptimWrapper
from helpers import (TINY_CONFIG, fake_runner, load_script, referring_batch,
                     tiny_rsrefseg)


def wrapper(model, **kwargs):
    init_default_scope('mmseg')
    cfg = dict(
        type='SkipNonFiniteAmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-3),
        **kwargs)
    return build_optim_wrapper(model, cfg)


def test_bf16_training_step(amp_on_cpu):
    model = tiny_rsrefseg()
    optim_wrapper = wrapper(model, dtype='bfloat16')
    assert isinstance(optim_wrapper, SkipNonFiniteAmpOptimWrapper)
    assert isinstance(optim_wrapper, AmpOptimWrapper)
    dtypes = {}
    model.backbone.visual.register_forward_hook(
        lambda m, i, o: dtypes.__setitem__('clip', o[1].dtype))
    model.decode_head.image_encoder.blocks[0].mlp.register_forward_hook(
        lambda m, i, o: dtypes.__setitem__('sam_mlp', o.dtype))
    model.decode_head.mask_decoder.register_forward_hook(
        lambda m, i, o: dtypes.__setitem__('decoder', o[0].dtype))
    before = {
        n: p.detach().clone()
        for n, p in model.named_parameters() if p.requires_grad
    }
    losses = model.train_step(referring_batch(), optim_wrapper)
    assert torch.isfinite(losses['loss'])
    assert dtypes == dict(
        clip=torch.bfloat16, sam_mlp=torch.bfloat16, decoder=torch.bfloat16)
    # master weights stay fp32 and every trainable part was updated
    for prefix in ('backbone.visual', 'backbone.text', 'neck',
                   'decode_head.image_encoder', 'decode_head.mask_decoder'):
        changed = [
            n for n, p in model.named_parameters() if n.startswith(prefix)
            and n in before and not torch.equal(p.detach(), before[n])
        ]
        assert changed, f'no parameter of {prefix} was updated'
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert optim_wrapper.skipped_steps == 0


def test_state_dict_keeps_mmengine_layout(amp_on_cpu):
    model = torch.nn.Linear(3, 2)
    optim_wrapper = wrapper(model, dtype='bfloat16', max_consecutive_skips=3)
    with optim_wrapper.optim_context(model):
        loss = model(torch.ones(2, 3)).float().square().mean()
    optim_wrapper.update_params(loss)
    state = optim_wrapper.state_dict()
    assert set(state) == {'state', 'param_groups', 'loss_scaler'}
    other = wrapper(torch.nn.Linear(3, 2), dtype='bfloat16')
    other.load_state_dict(state)
    assert other.optimizer.state_dict()['state'].keys() == \
        optim_wrapper.optimizer.state_dict()['state'].keys()


@pytest.mark.skipif(is_cuda_available(), reason='CPU-only behaviour')
def test_without_accelerator_mmengine_refuses():
    with pytest.raises(AssertionError, match='only available training on'):
        wrapper(torch.nn.Linear(2, 2), dtype='bfloat16')


@pytest.mark.parametrize('fp32,amp', [
    ('SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper'),
    ('OptimWrapper', 'AmpOptimWrapper'),
])
def test_train_tool_amp_selects_wrapper(fp32, amp, monkeypatch, tmp_path):
    """tools/train.py --amp: the AMP counterpart of the config's wrapper,
    bf16 unless the config sets a dtype."""
    tool = load_script('tools/train.py')
    seen = {}
    monkeypatch.setattr(tool, 'Runner', fake_runner(seen))
    monkeypatch.setattr('sys.argv', [
        'train.py', TINY_CONFIG, '--amp', '--work-dir',
        str(tmp_path), '--cfg-options', f'optim_wrapper.type={fp32}'
    ])
    tool.main()
    ow = seen['cfg'].optim_wrapper
    assert (ow.type, ow.dtype, ow.loss_scale) == (amp, 'bfloat16', 'dynamic')
    assert seen['ran'] == 'train'
