"""Save / resume / load_from / test with checkpoints the runner writes,
through the safe loader (``weights_only=True`` + an allow-list), a crafted
checkpoint that would run a command, and the hash of the weights that the
runner writes and every load checks.

torch >= 2.6 refuses the message hub and numpy scalars of full training
checkpoints under ``weights_only=True``; importing rsrefseg_mm makes
mmengine's ``CheckpointLoader`` read local files with the allow-list, so
``RSRefSegRunner``, mmengine's ``Runner`` and ``Pretrained`` ``init_cfg``
load them, and refuse a crafted file.
"""
import copy
import logging
import os
import pickle
import threading
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.logging import HistoryBuffer, MMLogger
from mmengine.model import BaseModel, BaseModule
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.registry import DATASETS, METRICS, MODELS
from torch.utils.data import Dataset

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import RSRefSegRunner
from rsrefseg_mm.utils import (ChangedCheckpointError, CheckpointLimitError,
                               CheckpointMismatchError, state_dict_sha256,
                               verify_state_dict_hash)
from rsrefseg_mm.utils.checkpoint import (UnsafeCheckpointError,
                                          allow_unsafe_load,
                                          runner_safe_globals, safe_torch_load)
from rsrefseg_mm.utils.checkpoint_limits import check_checkpoint_size
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
def _allow_list_left_as_found():
    """The loads leave torch's allow-list and switches as they found them."""
    before = set(torch.serialization.get_safe_globals())
    assert not before & set(runner_safe_globals())
    yield
    assert set(torch.serialization.get_safe_globals()) == before
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ


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


def test_mmengine_runner_loads_through_the_safe_loader(tmp_path):
    """mmengine's own Runner (with rsrefseg_mm imported) reads its
    checkpoints with the allow-list and refuses a crafted one."""
    RSRefSegRunner.from_cfg(_cfg(tmp_path / 'w', 4)).train()
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = str(tmp_path / 'w' / 'iter_4.pth')
    assert Runner.from_cfg(cfg).test()['mae'] < 5
    path, marker = _crafted_checkpoint(tmp_path)
    cfg = _cfg(tmp_path / 'crafted', 4)
    cfg['load_from'] = path
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        Runner.from_cfg(cfg).test()
    assert not marker.exists()


def test_runner_loads_strictly(tmp_path):
    """load_from with other tensors raises CheckpointMismatchError with the
    counts and keys before anything is copied; strict_load=False loads what
    matches; a DDP-prefixed file (module.) loads strictly."""
    toy = _ToyRegressor()
    torch.nn.init.constant_(toy.linear.weight, 3.0)
    good = toy.state_dict()
    cfg = _cfg(tmp_path / 'test', 4)
    runner = RSRefSegRunner.from_cfg(cfg)
    before = _weights(runner)
    partial = tmp_path / 'partial.pth'
    torch.save(
        dict(state_dict={
            'linear.weight': good['linear.weight'],
            'head.weight': torch.zeros(1)
        }), partial)
    with pytest.raises(CheckpointMismatchError) as info:
        runner.load_checkpoint(str(partial))
    msg = str(info.value)
    assert str(partial) in msg and 'strict_load = False' in msg
    assert '1 missing (e.g. linear.bias)' in msg
    assert '1 unexpected (e.g. head.weight)' in msg
    for k, v in _weights(runner).items():  # nothing was copied
        torch.testing.assert_close(v, before[k])
    runner.load_checkpoint(str(partial), strict=False)
    assert runner.model.linear.weight.eq(3.0).all()
    wrapped = tmp_path / 'ddp.pth'
    torch.save(
        dict(state_dict={f'module.{k}': v
                         for k, v in good.items()}), wrapped)
    cfg = _cfg(tmp_path / 'ddp', 4)
    cfg['strict_load'] = True
    RSRefSegRunner.from_cfg(cfg).load_checkpoint(str(wrapped))


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


class _Pretrained(BaseModule):

    def __init__(self, checkpoint):
        super().__init__(
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
        self.linear = nn.Linear(2, 1)


def test_crafted_checkpoint_is_refused_and_does_not_run(tmp_path):
    path, marker = _crafted_checkpoint(tmp_path)
    # mmengine's loader (init_model, load_checkpoint)
    with pytest.raises(UnsafeCheckpointError) as info:
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    msg = str(info.value)
    assert path in msg and 'posix.system' in msg
    assert '--unsafe-load' in msg and 'allow_unsafe_load()' in msg
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        load_checkpoint(_ToyRegressor(), path)
    # a Pretrained init_cfg
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        _Pretrained(path).init_weights()
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


def test_unsafe_opt_in_really_unpickles(tmp_path, monkeypatch):
    """The crafted file is live: with the opt-in its command does run
    (so the refusal above is what kept it from running); the opt-in ends
    with its block, and an environment variable does not opt in."""
    path, marker = _crafted_checkpoint(tmp_path)
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = path
    runner = RSRefSegRunner.from_cfg(cfg)
    monkeypatch.setenv('RSREFSEG_UNSAFE_LOAD', '1')
    with pytest.raises(UnsafeCheckpointError):
        runner.load_checkpoint(path)
    assert not marker.exists()
    with allow_unsafe_load():
        ckpt = runner.load_checkpoint(path)
    assert ckpt['meta']['note'] == 0  # os.system's exit status
    assert marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        runner.load_checkpoint(path)


def test_concurrent_loads_keep_the_allow_list(tmp_path, monkeypatch):
    """torch's allow-list is one process-wide set: a load that ends while
    another is half-way must not take the globals away from it.

    Thread X loads one buffer and thread Y two; X is held inside its load
    until Y has started, then ends while Y is held after its first buffer.
    Y's second buffer then still needs HistoryBuffer on the allow-list.
    """
    torch.save({'a': HistoryBuffer([1.0], [1])}, tmp_path / 'X.pth')
    torch.save({
        'a': HistoryBuffer([1.0], [1]),
        'b': HistoryBuffer([2.0], [1])
    }, tmp_path / 'Y.pth')
    gates = {
        name: (threading.Event(), threading.Event())
        for name in ('X', 'Y')
    }
    setstate = HistoryBuffer.__setstate__

    def held_setstate(buffer, state):
        gate = gates.pop(threading.current_thread().name, None)
        if gate is not None:  # the first buffer of each thread
            inside, release = gate
            inside.set()
            assert release.wait(60)
        setstate(buffer, state)

    monkeypatch.setattr(HistoryBuffer, '__setstate__', held_setstate)
    results = {}

    def load(name):
        try:
            results[name] = safe_torch_load(str(tmp_path / f'{name}.pth'))
        except Exception as e:  # reported by the assertions below
            results[name] = e

    x_inside, x_release = gates['X']
    y_inside, y_release = gates['Y']
    threads = {
        n: threading.Thread(target=load, args=(n, ), name=n)
        for n in ('X', 'Y')
    }
    threads['X'].start()
    assert x_inside.wait(60), results
    threads['Y'].start()
    assert y_inside.wait(60)
    x_release.set()
    threads['X'].join(60)
    assert not isinstance(results['X'], Exception), results['X']
    assert results['X']['a'].current() == 1.0
    y_release.set()
    threads['Y'].join(60)
    assert not isinstance(results['Y'], Exception), results['Y']
    assert results['Y']['b'].current() == 2.0


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


def _record_of(path, tensor):
    """The zip member holding ``tensor``'s bytes (its storage record)."""
    want = tensor.numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        found = [
            n for n in archive.namelist()
            if '/data/' in n and archive.read(n) == want
        ]
    assert len(found) == 1, found
    return found[0]


def _rewrite(path, out, member, change):
    """A copy of the zip ``path`` with ``member``'s bytes changed (the zip
    stays valid: its CRC is recomputed)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info,
                         change(data) if info.filename == member else data)
    return str(out)


class _Warnings(logging.Handler):
    """The warnings mmengine's current logger emits while installed."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        MMLogger.get_current_instance().addHandler(self)
        return self.messages

    def __exit__(self, *exc):
        MMLogger.get_current_instance().removeHandler(self)


def test_runner_checkpoints_carry_a_verified_hash(tmp_path):
    """The runner writes meta['state_dict_sha256']; a weight record
    changed afterwards (zip kept valid, or bytes overwritten in place) is
    refused by name through load_from, resume and safe_torch_load; a file
    re-saved with the same weights verifies."""
    RSRefSegRunner.from_cfg(_cfg(tmp_path / 'w', 4)).train()
    path = str(tmp_path / 'w' / 'iter_4.pth')
    good = safe_torch_load(path)
    assert good['meta']['state_dict_sha256'] == state_dict_sha256(
        good['state_dict'])
    assert verify_state_dict_hash(good, path)
    # a runner checkpoint is a plain zip: records unpack to its size
    check_checkpoint_size(path, max_expansion=1.0)
    weight = good['state_dict']['linear.weight']
    member = _record_of(path, weight)
    changed = _rewrite(path, tmp_path / 'changed.pth', member,
                       lambda data: b'\xff' * len(data))
    assert torch.load(
        changed, weights_only=False)['state_dict']['linear.weight'].isnan(
        ).all()  # torch alone loads it
    with pytest.raises(ChangedCheckpointError) as info:
        safe_torch_load(changed)
    assert str(info.value).startswith(
        f'{changed}: changed after it was written: its state_dict hashes')
    cfg = _cfg(tmp_path / 'test', 4)
    cfg['load_from'] = changed
    with pytest.raises(ChangedCheckpointError, match='changed.pth'):
        RSRefSegRunner.from_cfg(cfg).test()
    cfg = _cfg(tmp_path / 'resume', 8)
    cfg.update(load_from=changed, resume=True)
    with pytest.raises(ChangedCheckpointError, match='changed.pth'):
        RSRefSegRunner.from_cfg(cfg).train()
    # bytes overwritten in place (the zip's CRC no longer matches, which
    # torch.load does not check)
    in_place = tmp_path / 'in_place.pth'
    in_place.write_bytes(open(path, 'rb').read())
    with zipfile.ZipFile(path) as archive:
        info_ = archive.getinfo(member)
    with open(in_place, 'r+b') as f:
        f.seek(info_.header_offset + 26)
        skip = int.from_bytes(f.read(2), 'little') + int.from_bytes(
            f.read(2), 'little')
        f.seek(skip, 1)
        f.write(b'\xff' * 4)
    with pytest.raises(ChangedCheckpointError, match='in_place.pth'):
        safe_torch_load(str(in_place))
    # re-saved with the same weights (e.g. copied with torch.save): loads;
    # other weights under the old hash: refused
    resaved = tmp_path / 'resaved.pth'
    torch.save(good, resaved)
    with _Warnings() as warnings:
        assert verify_state_dict_hash(safe_torch_load(str(resaved)), resaved)
    assert warnings == []
    good['state_dict']['linear.bias'] += 1
    torch.save(good, resaved)
    with pytest.raises(ChangedCheckpointError, match='resaved.pth'):
        safe_torch_load(str(resaved))


def test_unhashed_file_warns_once_and_loads(tmp_path):
    """Official weights and other tools' checkpoints carry no hash: one
    warning per file, naming it, then the file loads."""
    paths = [str(tmp_path / f'other_{i}.pth') for i in range(2)]
    for i, path in enumerate(paths):
        torch.save(dict(state_dict=dict(w=torch.full((3, ), float(i)))), path)
    with _Warnings() as warnings:
        for _ in range(3):
            for i, path in enumerate(paths):
                ckpt = safe_torch_load(path)
                assert ckpt['state_dict']['w'].eq(i).all()
                assert not verify_state_dict_hash(ckpt, path)
    assert len(warnings) == 2, warnings
    for path, message in zip(paths, warnings):
        assert message.startswith(
            f'{path}: carries no meta[\'state_dict_sha256\']'), message


def test_runner_reads_max_checkpoint_expansion(tmp_path):
    """A deflated checkpoint is refused at the default limit and loads
    with the config's max_checkpoint_expansion above its ratio (load_from
    and resume share load_checkpoint); a limit below 1 fails at build."""
    stored = tmp_path / 'stored.pth'
    torch.save(
        dict(
            state_dict=_ToyRegressor().state_dict(),
            meta=dict(pad=torch.zeros(2**16))), stored)
    deflated = tmp_path / 'deflated.pth'
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(deflated, 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(deflated) as archive:
        ratio = sum(i.file_size for i in archive.infolist()) / \
            deflated.stat().st_size
    assert ratio > 2
    runner = RSRefSegRunner.from_cfg(_cfg(tmp_path / 'default', 4))
    with pytest.raises(CheckpointLimitError, match='deflated.pth'):
        runner.load_checkpoint(str(deflated))
    cfg = _cfg(tmp_path / 'raised', 4)
    cfg['max_checkpoint_expansion'] = ratio + 1
    runner = RSRefSegRunner.from_cfg(cfg)
    assert runner.load_checkpoint(str(deflated))['meta']['pad'].eq(0).all()
    cfg['max_checkpoint_expansion'] = 0.5
    with pytest.raises(ValueError, match='max_checkpoint_expansion = 0.5'):
        RSRefSegRunner.from_cfg(cfg)
