"""AnyDeviceAmpOptimWrapper: bf16 autocast training on CPU."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import AnyDeviceAmpOptimWrapper, IdentityLossScaler

from helpers import TINY_CONFIG, load_script

TINY_CFG = TINY_CONFIG


def tiny_model():
    cfg = Config.fromfile(TINY_CFG)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).train()


def wrapper(model, **kwargs):
    cfg = dict(
        type='AnyDeviceAmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-3),
        **kwargs)
    return build_optim_wrapper(model, cfg)


def train_batch(B=2, size=128):
    torch.manual_seed(1)
    samples = []
    for i in range(B):
        gt = torch.zeros(1, size, size, dtype=torch.long)
        gt[:, 20:60, 30:70] = 1
        ds = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                text=f'the {i}th red roof'))
        ds.gt_sem_seg = PixelData(data=gt)
        samples.append(ds)
    inputs = [
        torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        for _ in range(B)
    ]
    return dict(inputs=inputs, data_samples=samples)


def test_bf16_training_step_on_cpu():
    model = tiny_model()
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
    losses = model.train_step(train_batch(), optim_wrapper)
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
    model = tiny_model()
    optim_wrapper = wrapper(
        model, dtype=torch.bfloat16, clip_grad=dict(max_norm=1.0))
    model.train_step(train_batch(B=1), optim_wrapper)
    state = optim_wrapper.state_dict()
    assert state['loss_scaler'] == {}
    other = wrapper(tiny_model(), dtype='bfloat16')
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

    class FakeRunner:

        @staticmethod
        def from_cfg(cfg):
            seen['cfg'] = cfg
            return FakeRunner()

        def train(self):
            seen['trained'] = True

    monkeypatch.setattr(tool, 'Runner', FakeRunner)
    monkeypatch.setattr('sys.argv', [
        'train.py', TINY_CFG, '--amp', '--work-dir',
        str(tmp_path)
    ])
    tool.main()
    ow = seen['cfg'].optim_wrapper
    assert ow.type == 'AnyDeviceAmpOptimWrapper' and ow.dtype == 'bfloat16'
    assert seen['trained']
