"""Non-finite (NaN/inf) losses or gradients skip the optimizer step, are
counted in the log and stop training after N consecutive skips."""
import copy
import math

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import DATASETS, MODELS
from torch.utils.data import Dataset

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import (SKIPPED_STEPS_KEY, NonFiniteMixin,
                                NonFiniteStepError)
from helpers import referring_batch, tiny_rsrefseg

FP32 = dict(type='SkipNonFiniteOptimWrapper')
AMP = dict(type='SkipNonFiniteAmpOptimWrapper', dtype='bfloat16')


@pytest.fixture(params=[FP32, AMP], ids=lambda c: c['type'])
def cfg(request):
    """Both guarded wrappers (the AMP one through mmengine's wrapper on
    CPU, see ``amp_on_cpu``)."""
    if request.param is AMP:
        request.getfixturevalue('amp_on_cpu')
    return request.param


def build(model, cfg, **kwargs):
    init_default_scope('mmseg')
    cfg = dict(cfg, optimizer=dict(type='AdamW', lr=0.1), **kwargs)
    return build_optim_wrapper(model, cfg)


def snapshot(model, optim_wrapper):
    return (copy.deepcopy(model.state_dict()),
            copy.deepcopy(optim_wrapper.optimizer.state_dict()))


def linear_step(model, optim_wrapper, scale=1.0):
    """One update_params call on a linear model; ``scale`` may be NaN."""
    x = torch.ones(4, 3)
    with optim_wrapper.optim_context(model):
        loss = model(x).float().pow(2).mean() * scale
    optim_wrapper.update_params(loss)


def skipped_in_log():
    return MessageHub.get_current_instance().get_scalar(
        SKIPPED_STEPS_KEY).current()


def test_nan_loss_skips_step_and_counts(cfg):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optim_wrapper = build(model, cfg, clip_grad=dict(max_norm=1.0))
    linear_step(model, optim_wrapper)  # one good step: AdamW has state
    weights, state = snapshot(model, optim_wrapper)
    linear_step(model, optim_wrapper, scale=math.nan)
    # nothing moved: weights and AdamW moments are those before the step
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = optim_wrapper.optimizer.state_dict()['state']
    for i, s in state['state'].items():
        for k, v in s.items():
            assert torch.equal(after[i][k], v), (i, k)
    assert all(p.grad is None or not p.grad.any()
               for p in model.parameters())  # gradients were zeroed
    assert isinstance(optim_wrapper, NonFiniteMixin)
    counts = (optim_wrapper.skipped_steps, optim_wrapper.consecutive_skips)
    assert counts == (1, 1)
    assert skipped_in_log() == 1
    # a finite step runs again and resets the consecutive count
    linear_step(model, optim_wrapper)
    assert not torch.equal(model.weight, weights['weight'])
    assert torch.isfinite(model.weight).all()
    counts = (optim_wrapper.skipped_steps, optim_wrapper.consecutive_skips)
    assert counts == (1, 0)
    assert skipped_in_log() == 1


def test_inf_gradient_with_finite_loss_is_skipped(cfg):
    model = nn.Linear(3, 2)
    optim_wrapper = build(model, cfg)
    model.bias.register_hook(lambda g: torch.full_like(g, math.inf))
    before = model.weight.detach().clone()
    linear_step(model, optim_wrapper)
    assert torch.equal(model.weight, before)
    assert optim_wrapper.skipped_steps == 1


def test_nan_in_an_accumulated_micro_batch_skips_the_step():
    model = nn.Linear(3, 2)
    optim_wrapper = build(model, FP32, accumulative_counts=2)
    optim_wrapper.initialize_count_status(model, 0, 4)
    before = model.weight.detach().clone()
    # NaN loss on micro-batch 1 with a zero gradient (0 * nan is not
    # back-propagated as NaN here: the loss alone must be caught)
    with optim_wrapper.optim_context(model):
        loss = model(torch.ones(1, 3)).sum() * 0 + math.nan
    optim_wrapper.update_params(loss)
    linear_step(model, optim_wrapper)  # micro-batch 2: finite, steps
    assert torch.equal(model.weight, before)
    assert optim_wrapper.skipped_steps == 1
    linear_step(model, optim_wrapper)
    linear_step(model, optim_wrapper)  # next accumulated step is finite
    assert not torch.equal(model.weight, before)


def test_consecutive_skips_raise(cfg):
    model = nn.Linear(3, 2)
    optim_wrapper = build(model, cfg, max_consecutive_skips=3)
    linear_step(model, optim_wrapper, scale=math.nan)
    linear_step(model, optim_wrapper)  # resets the run of skips
    linear_step(model, optim_wrapper, scale=math.nan)
    linear_step(model, optim_wrapper, scale=math.inf)
    with pytest.raises(NonFiniteStepError, match='3 consecutive'):
        linear_step(model, optim_wrapper, scale=math.nan)
    assert optim_wrapper.skipped_steps == 4


def test_grad_scaler_path_skips_and_lowers_the_scale(amp_on_cpu):
    """The float16 path (a real GradScaler, here on CPU; float16 autocast
    itself needs a GPU): an inf step is skipped and counted, and the scaler
    still sees the overflow and halves its scale."""
    model = nn.Linear(3, 2)
    optim_wrapper = build(model, AMP)
    optim_wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=16.)
    linear_step(model, optim_wrapper)
    assert optim_wrapper.loss_scaler.get_scale() == 16.
    assert optim_wrapper.skipped_steps == 0
    before = model.weight.detach().clone()
    linear_step(model, optim_wrapper, scale=math.inf)
    assert torch.equal(model.weight, before)
    assert optim_wrapper.loss_scaler.get_scale() == 8.
    assert optim_wrapper.skipped_steps == 1
    linear_step(model, optim_wrapper)
    assert not torch.equal(model.weight, before)


@pytest.mark.parametrize('bad', [0, -1, 2.5, True, 'x'])
def test_bad_limit_is_an_error(bad):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        build(model, FP32, max_consecutive_skips=bad)
    assert build(model, FP32, max_consecutive_skips=None)  # never raises


def test_bf16_rsrefseg_step_with_injected_nan_keeps_weights(amp_on_cpu):
    """The tiny RSRefSeg trained in bf16 with a NaN injected into the SAM
    decoder's output: the guarded wrapper keeps every weight finite and
    unchanged, mmengine's AmpOptimWrapper writes NaN into them."""
    batch = referring_batch(batch_size=1)

    def poison(module, inputs, outputs):
        return (outputs[0] * math.nan, ) + tuple(outputs[1:])

    results = {}
    for guarded in (True, False):
        model = tiny_rsrefseg()
        optim_wrapper = build(
            model, AMP if guarded else dict(AMP, type='AmpOptimWrapper'))
        assert isinstance(optim_wrapper, AmpOptimWrapper)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        handle = model.decode_head.mask_decoder.register_forward_hook(poison)
        losses = model.train_step(batch, optim_wrapper)
        handle.remove()
        assert not torch.isfinite(losses['loss'])
        results[guarded] = (before, dict(model.named_parameters()))
    # (BN running statistics, updated by the forward pass before the NaN,
    # are not the optimizer's business)
    before, after = results[True]
    for k, v in after.items():
        assert torch.equal(v, before[k]), k
    before, after = results[False]
    assert any(not torch.isfinite(v).all() for v in after.values())


# ------------------------------------------------------ through the runner
@MODELS.register_module(force=True)
class _NaNAtIterModel(BaseModel):
    """Linear regressor whose loss is NaN for the batches marked bad."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, bad, mode='tensor'):
        loss = self.linear(inputs).pow(2).mean()
        if bool(bad.any()):
            loss = loss * math.nan
        return dict(loss=loss)


@DATASETS.register_module(force=True)
class _NaNAtData(Dataset):

    def __init__(self, bad=(), n=8):
        self.bad, self.n = set(bad), n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(inputs=torch.ones(2), bad=torch.tensor(i in self.bad))


def runner_cfg(work_dir, bad, max_iters, limit):
    return dict(
        model=dict(type='_NaNAtIterModel'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='_NaNAtData', bad=bad),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=1,
            num_workers=0),
        optim_wrapper=dict(
            type='SkipNonFiniteOptimWrapper',
            optimizer=dict(type='SGD', lr=0.01),
            max_consecutive_skips=limit),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=1000)),
        default_scope='mmseg',
        experiment_name=f'nan_{work_dir.name}',
        env_cfg=dict(dist_cfg=dict(backend='gloo')))


def test_runner_logs_the_counter_and_stops(tmp_path):
    runner = Runner.from_cfg(runner_cfg(tmp_path / 'a', {1, 2}, 4, 3))
    runner.train()
    log = open(runner.logger.log_file).read()
    assert 'optimizer step skipped (2 in a row of at most 3, 2 in total)' \
        in log
    assert 'skipped_steps: 2' in log  # the counter on the iteration lines
    assert torch.isfinite(runner.model.linear.weight).all()

    runner = Runner.from_cfg(runner_cfg(tmp_path / 'b', set(range(8)), 8, 3))
    with pytest.raises(NonFiniteStepError):
        runner.train()
    assert runner.iter == 2  # stopped at the third iteration
