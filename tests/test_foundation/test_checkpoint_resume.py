"""Save / resume / load_from / test with checkpoints our runner writes.

torch >= 2.6 defaults ``torch.load`` to ``weights_only=True`` while mmengine
0.10.7 does not pass it, so full training checkpoints (message hub, numpy
scalars, config text) fail to load unless rsrefseg_mm fixes the loader.
"""
import copy

import numpy as np
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import rsrefseg_mm  # noqa: F401  (registers the checkpoint loader)
from mmseg.registry import DATASETS, METRICS, MODELS


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
            return [dict(err=float((p - t).abs().item()))
                    for p, t in zip(pred, targets)]
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


def _cfg(work_dir, max_iters):
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
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=4),
        ],
        train_cfg=dict(
            type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=4, by_epoch=False)),
        randomness=dict(seed=0, deterministic=True),
        default_scope='mmseg',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        experiment_name=f'toy_{max_iters}_{work_dir.name}',
    )


def _weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_save_resume_load_and_test(tmp_path):
    # an uninterrupted run of 8 iterations
    full = Runner.from_cfg(_cfg(tmp_path / 'full', 8))
    full.train()
    expected = _weights(full)

    # a run stopped at iteration 4 (checkpoint iter_4.pth) ...
    part = Runner.from_cfg(_cfg(tmp_path / 'part', 4))
    part.train()
    assert (tmp_path / 'part' / 'iter_4.pth').is_file()
    # ... then resumed to 8 from the latest checkpoint in its work_dir
    cfg = _cfg(tmp_path / 'part', 8)
    cfg['resume'] = True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 8
    for k, v in _weights(resumed).items():
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0)

    # load_from the saved checkpoint and test (tools/test.py's path)
    cfg = _cfg(tmp_path / 'test', 8)
    cfg['load_from'] = str(tmp_path / 'part' / 'iter_8.pth')
    tester = Runner.from_cfg(cfg)
    metrics = tester.test()
    for k, v in _weights(tester).items():
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0)
    assert metrics['mae'] < 5


def test_checkpoint_needs_full_unpickling(tmp_path):
    """Guard: the runner's checkpoints really hold non-tensor objects, so
    plain ``torch.load`` (weights_only=True on torch>=2.6) rejects them and the
    test above exercises rsrefseg_mm's loader."""
    import pytest
    runner = Runner.from_cfg(_cfg(tmp_path / 'w', 4))
    runner.train()
    with pytest.raises(Exception, match='(?i)weights_only'):
        torch.load(tmp_path / 'w' / 'iter_4.pth')
