"""Save / resume / load_from / test with checkpoints the runner writes,
through the safe loader (``weights_only=True`` + an allow-list), and a
crafted checkpoint that would run a command.

torch >= 2.6 defaults ``torch.load`` to ``weights_only=True`` while mmengine
0.10.7 does not pass an allow-list, so full training checkpoints (message
hub, numpy scalars) do not load through mmengine's own ``Runner``;
``RSRefSegRunner`` loads them with the allow-list, for its own loads only.
"""
import copy
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.registry import DATASETS, METRICS, MODELS
from torch.utils.data import Dataset

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import RSRefSegRunner
from rsrefseg_mm.utils.checkpoint import (TORCH_NO_WEIGHTS_ONLY_ENV,
                                          UNSAFE_LOAD_ENV,
                                          UnsafeCheckpointError,
                                          allow_unsafe_load,
                                          checkpoint_loading,
                                          runner_safe_globals, safe_torch_load)
from helpers import crafted_checkpoint


@MODELS.register_module(force=True)
class _ToyRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        pred = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((pred - targets)**2).mean())
        if mode == 'predict':
            return [
                dict(err=float((p - t).abs().item()))
                for p, t in zip(pred, targets)
            ]
        return pred


@METRICS.register_module(force=True)
class _ToyMAE(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(s['err'] for s in data_samples)

    def compute_metrics(self, results):
        return dict(mae=float(np.mean(results)))


@DATASETS.register_module(force=True)
class _ToyData(Dataset):

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = self.x @ torch.tensor([[1.5], [-2.0]]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


@pytest.fixture(autouse=True)
def _no_unsafe_opt_in(monkeypatch):
    """These tests exercise the safe path unless they opt in themselves,
    and leave torch's allow-list and switches as they found them."""
    monkeypatch.delenv(UNSAFE_LOAD_ENV, raising=False)
    monkeypatch.delenv(TORCH_NO_WEIGHTS_ONLY_ENV, raising=False)
    before = set(torch.serialization.get_safe_globals())
    assert not before & set(runner_safe_globals())
    yield
    assert set(torch.serialization.get_safe_globals()) == before
    assert TORCH_NO_WEIGHTS_ONLY_ENV not in os.environ


def _cfg(work_dir, max_iters, optim_wrapper=None):
    loader = dict(
        dataset=dict(type='_ToyData'),
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'),
        batch_size=4,
        num_workers=0)
    return dict(
        model=dict(type='_ToyRegressor'),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=copy.deepcopy(loader),
        test_dataloader=copy.deepcopy(loader),
        val_evaluator=dict(type='_ToyMAE'),
        test_evaluator=dict(type='_ToyMAE'),
        optim_wrapper=optim_wrapper
        or dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=4),
        ],
        train_cfg=dict(
            type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=4,
                            by_epoch=False)),
        randomness=dict(seed=0, deterministic=True),
        default_scope='mmseg',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        experiment_name=f'toy_{max_iters}_{work_dir.parent.name}_'
        f'{work_dir.name}',
    )


def _weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_save_resume_load_and_test(tmp_path):
    # an uninterrupted run of 8 iterations
    full = RSRefSegRunner.from_cfg(_cfg(tmp_path / 'full', 8))
    full.train()
    expected = _weights(full)

    # a run stopped at iteration 4 (checkpoint iter_4.pth) ...
    part = RSRefSegRunner.from_cfg(_cfg(tmp_path / 'part', 4))
    part.train()
    assert (tmp_path / 'part' / 'iter_4.pth').is_file()
    # ... then resumed to 8 from the latest checkpoint in its work_dir
    cfg = _cfg(tmp_path / 'part', 8)
    cfg['resume'] = True
    resumed = RSRefSegRunner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 8
    for k, v in _weights(resumed).items():
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0)

    # load_from the saved checkpoint and test (tools/test.py's path)
    cfg = _cfg(tmp_path / 'test', 8)
    cfg['load_from'] = str(tmp_path / 'part' / 'iter_8.pth')
    tester = RSRefSegRunner.from_cfg(cfg)
    metrics = tester.test()
    for k, v in _weights(tester).items():
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0)
    assert metrics['mae'] < 5


def test_mmengine_runner_is_left_as_shipped(tmp_path):
    """mmengine's own Runner keeps torch's plain weights_only=True load:
    it refuses the message hub of its own checkpoints (so the allow-list
    above is what makes load_from work, and it is not installed for
    mmengine's Runner or CheckpointLoader by importing rsrefseg_mm)."""
    RSRefSegRunner.from_cfg(_cfg(tmp_path / 'w', 4)).train()
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = str(tmp_path / 'w' / 'iter_4.pth')
    with pytest.raises(pickle.UnpicklingError) as info:
        Runner.from_cfg(cfg).test()
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert 'HistoryBuffer' in str(info.value)


def _allowed_names():
    return {
        item[1] if isinstance(item, tuple) else
        f'{item.__module__}.{item.__qualname__}'
        for item in runner_safe_globals()
    }


@pytest.mark.parametrize('optim_wrapper', [
    None,
    dict(
        type='SkipNonFiniteOptimWrapper',
        optimizer=dict(type='AdamW', lr=0.05)),
])
def test_runner_checkpoint_globals_are_allow_listed(tmp_path, optim_wrapper):
    """Guard: the runner's checkpoints really hold non-tensor objects, so
    plain ``torch.load`` (weights_only=True on torch>=2.6) rejects them; every
    global they need is on the allow-list and the safe loader reads them."""
    runner = RSRefSegRunner.from_cfg(_cfg(tmp_path / 'w', 4, optim_wrapper))
    runner.train()
    path = str(tmp_path / 'w' / 'iter_4.pth')
    with pytest.raises(Exception, match='(?i)weights_only'):
        torch.load(path)
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in found
    assert found <= _allowed_names(), found - _allowed_names()
    ckpt = safe_torch_load(path)
    assert ckpt['meta']['iter'] == 4
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert len(buffer.data[0]) == 4 and np.isfinite(buffer.mean())


def _crafted_checkpoint(tmp_path):
    return crafted_checkpoint(tmp_path, _ToyRegressor().state_dict())


def test_crafted_checkpoint_is_refused_and_does_not_run(tmp_path):
    path, marker = _crafted_checkpoint(tmp_path)
    # mmengine's loader inside the scope (init_referring_model's path)
    with pytest.raises(UnsafeCheckpointError) as info:
        with checkpoint_loading(path):
            CheckpointLoader.load_checkpoint(path, map_location='cpu')
    msg = str(info.value)
    assert path in msg and 'posix.system' in msg
    assert '--unsafe-load' in msg and UNSAFE_LOAD_ENV in msg
    # the runner's load_from path (tools/test.py)
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = path
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        RSRefSegRunner.from_cfg(cfg).test()
    # and its resume path (tools/train.py --resume)
    cfg = _cfg(tmp_path / 'resume', 4)
    cfg.update(load_from=path, resume=True)
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        RSRefSegRunner.from_cfg(cfg).train()
    assert not marker.exists()


@pytest.mark.parametrize('opt_in', ['context', 'env'])
def test_unsafe_opt_in_really_unpickles(opt_in, tmp_path, monkeypatch):
    """The crafted file is live: with the opt-in its command does run
    (so the refusal above is what kept it from running); the opt-in of
    allow_unsafe_load ends with its block."""
    path, marker = _crafted_checkpoint(tmp_path)
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = path
    runner = RSRefSegRunner.from_cfg(cfg)
    if opt_in == 'env':
        monkeypatch.setenv(UNSAFE_LOAD_ENV, '1')
        ckpt = runner.load_checkpoint(path)
    else:
        with allow_unsafe_load():
            ckpt = runner.load_checkpoint(path)
        with pytest.raises(UnsafeCheckpointError):
            runner.load_checkpoint(path)
    assert ckpt['meta']['note'] == 0  # os.system's exit status
    assert marker.exists()
    assert TORCH_NO_WEIGHTS_ONLY_ENV not in os.environ


def test_nested_loads_keep_the_allow_list(tmp_path):
    """A load inside another checkpoint_loading block (e.g. a weight-file
    reader while a runner loads) does not drop the outer block's globals."""
    torch.save({'buffer': HistoryBuffer([1.0], [1])}, tmp_path / 'a.pth')
    with checkpoint_loading('outer.pth'):
        safe_torch_load(str(tmp_path / 'a.pth'))
        assert set(runner_safe_globals()) <= set(
            torch.serialization.get_safe_globals())
        ckpt = torch.load(tmp_path / 'a.pth')
    assert ckpt['buffer'].current() == 1.0


def test_history_buffer_getattr_is_restricted(tmp_path):
    """Only HistoryBuffer's statistics methods pass the allowed getattr."""

    class _Sneaky:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, 'update'))

    path = tmp_path / 'getattr.pth'
    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(str(path))
    assert str(path) in str(info.value) and "'update'" in str(info.value)
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)
