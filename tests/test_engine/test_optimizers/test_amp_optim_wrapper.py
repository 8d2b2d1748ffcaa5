"""AnyDeviceAmpOptimWrapper: bf16 autocast training on CPU."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import AnyDeviceAmpOptimWrapper, IdentityLossScaler

from helpers import (TINY_CONFIG, fake_runner, load_script, referring_batch,
                     tiny_rsrefseg)


def wrapper(model, **kwargs):
    init_default_scope('mmseg')
    cfg = dict(
        type='AnyDeviceAmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-3),
        **kwargs)
    return build_optim_wrapper(model, cfg)


def test_bf16_training_step_on_cpu():
    model = tiny_rsrefseg()
    optim_wrapper = wrapper(model, dtype='bfloat16')
    assert isinstance(optim_wrapper, AnyDeviceAmpOptimWrapper)
    assert isinstance(optim_wrapper.loss_scaler, IdentityLossScaler)
    dtypes = {}

    def record(name):
        return lambda m, i, o: dtypes.__setitem__(name, o.dtype)

    model.backbone.visual.register_forward_hook(
        lambda m, i, o: dtypes.__setitem__('clip', o[1].dtype))
    model.decode_head.image_encoder.blocks[0].mlp.register_forward_hook(
        record('sam_mlp'))
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
            n for n, p in model.named_parameters()
            if n.startswith(prefix) and n in before
            and not torch.equal(p.detach(), before[n])
        ]
        assert changed, f'no parameter of {prefix} was updated'
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # no autocast outside the optim context
    with torch.no_grad():
        model.decode_head.image_encoder.blocks[0].mlp(torch.randn(1, 64))
    assert dtypes['sam_mlp'] == torch.float32


def test_state_dict_round_trip_and_clip_grad():
    model = tiny_rsrefseg()
    optim_wrapper = wrapper(
        model, dtype=torch.bfloat16, clip_grad=dict(max_norm=1.0))
    model.train_step(referring_batch(batch_size=1), optim_wrapper)
    state = optim_wrapper.state_dict()
    assert state['loss_scaler'] == {}
    other = wrapper(tiny_rsrefseg(), dtype='bfloat16')
    # a state saved by an fp16 GradScaler run is accepted (scale ignored)
    state['loss_scaler'] = {'scale': 65536.0, 'growth_factor': 2.0}
    other.load_state_dict(state)
    assert other.optimizer.state_dict()['state'].keys() == \
        optim_wrapper.optimizer.state_dict()['state'].keys()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_float16_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match='bfloat16'):
        wrapper(torch.nn.Linear(2, 2), dtype='float16')
    with pytest.raises(ValueError, match='dtype should be one of'):
        wrapper(torch.nn.Linear(2, 2), dtype='half')


def test_train_tool_amp_selects_wrapper(monkeypatch, tmp_path):
    """tools/train.py --amp turns OptimWrapper into the CPU-capable one."""
    tool = load_script('tools/train.py')
    seen = {}
    monkeypatch.setattr(tool, 'Runner', fake_runner(seen))
    monkeypatch.setattr('sys.argv', [
        'train.py', TINY_CONFIG, '--amp', '--work-dir',
        str(tmp_path)
    ])
    tool.main()
    ow = seen['cfg'].optim_wrapper
    assert ow.type == 'AnyDeviceAmpOptimWrapper' and ow.dtype == 'bfloat16'
    assert seen['ran'] == 'train'
