"""tools/train.py + tools/test.py on the tiny config: resume equivalence,
multi-process (gloo) training and testing, --show-dir overlays, a crafted
checkpoint refused by tools/test.py."""
import glob
import json
import os.path as osp
import subprocess
import sys

import mmcv
import pytest
import torch

from rsrefseg_mm.utils import add_state_dict_hash, safe_torch_load
from helpers import FAST, REPO, crafted_checkpoint, free_port
from helpers import run_ok as run

PY = sys.executable


def train(config,
          work_dir,
          env,
          max_iters,
          extra=(),
          resume=False,
          compile_mode=None):
    args = [PY, 'tools/train.py', config, '--work-dir', str(work_dir)]
    if resume:
        args.append('--resume')
    if compile_mode is not None:
        args += ['--compile', compile_mode]
    args += [
        '--cfg-options', *FAST, f'train_cfg.max_iters={max_iters}',
        'default_hooks.checkpoint.interval=3',
        'default_hooks.checkpoint.max_keep_ckpts=3', *extra
    ]
    return run(args, env)


def weights(path):
    ckpt = safe_torch_load(str(path), map_location='cpu')
    return ckpt['state_dict'], ckpt


def read_metrics(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    assert files, f'no metrics json under {work_dir}'
    return json.load(open(files[-1]))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_config, env):
    """An uninterrupted 6-iteration run (checkpoints at 3 and 6)."""
    work = tmp_path_factory.mktemp('full')
    train(tiny_config, work, env, 6)
    return work


def test_resume_matches_uninterrupted_run(trained, tmp_path, tiny_config, env):
    # stop at 3 (same schedule: param_scheduler does not depend on
    # train_cfg.max_iters), then resume to 6 from the latest checkpoint
    train(tiny_config, tmp_path, env, 3)
    assert osp.isfile(tmp_path / 'iter_3.pth')
    proc = train(tiny_config, tmp_path, env, 6, resume=True)
    assert 'resumed' in (proc.stdout + proc.stderr).lower()
    full, full_ckpt = weights(trained / 'iter_6.pth')
    resumed, res_ckpt = weights(tmp_path / 'iter_6.pth')
    assert res_ckpt['meta']['iter'] == full_ckpt['meta']['iter'] == 6
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-5, rtol=0)
    # the run must have trained: weights differ from the iteration-3 ones
    mid, _ = weights(tmp_path / 'iter_3.pth')
    changed = sum(not torch.equal(mid[k], full[k]) for k in full)
    assert changed > 10
    # optimizer and scheduler state came back too
    assert res_ckpt['optimizer']['state'].keys() == \
        full_ckpt['optimizer']['state'].keys()
    assert res_ckpt['param_schedulers'] == full_ckpt['param_schedulers']


@pytest.mark.compile
def test_compile_switch_in_train_and_test(trained, tmp_path, tiny_config, env):
    """--compile: CompileHotPathsHook compiles the towers for training and
    for testing; 3 training iterations through the Dynamo graphs give the
    eager run's weights (backend eager, set on the hook in the config: the
    plumbing; Inductor and AOTAutograd are compared with eager in
    tests/test_engine/test_compile.py)."""
    config = tmp_path / 'tiny_compile_eager.py'
    config.write_text(f"_base_ = [{tiny_config!r}]\n"
                      "custom_hooks = [dict(type='CompileHotPathsHook', "
                      "backend='eager')]\n")
    proc = train(str(config), tmp_path, env, 3, compile_mode='default')
    out = proc.stdout + proc.stderr
    assert "torch.compile({'backend': 'eager'}) of ['backbone.visual', " \
        "'backbone.text', 'decode_head._encode'] (before train_step)" in out
    eager, _ = weights(trained / 'iter_3.pth')
    compiled, _ = weights(tmp_path / 'iter_3.pth')
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], atol=1e-4, rtol=0)
    proc = run([
        PY, 'tools/test.py',
        str(config),
        str(trained / 'iter_6.pth'), '--work-dir',
        str(tmp_path / 'test'), '--compile', '--cfg-options', *FAST
    ], env)
    assert '(before test_step)' in proc.stdout + proc.stderr
    assert 'refer/mIoU' in read_metrics(tmp_path / 'test')


def test_single_and_two_process_test_agree(trained, tmp_path, tiny_config,
                                           env):
    ckpt = str(trained / 'iter_6.pth')
    one = tmp_path / 'one'
    run([
        PY, 'tools/test.py', tiny_config, ckpt, '--work-dir',
        str(one), '--show-dir', 'vis', '--cfg-options', *FAST,
        'default_hooks.visualization.interval=1'
    ], env)
    two = tmp_path / 'two'
    run([
        'bash', 'tools/dist_test.sh', tiny_config, ckpt, '2', '--work-dir',
        str(two), '--cfg-options', *FAST
    ], {
        **env, 'PORT': str(free_port())
    })
    m1, m2 = read_metrics(one), read_metrics(two)
    keys = [k for k in m1 if k.startswith('refer/')]
    assert 'refer/mIoU' in keys and 'refer/Pr@0.5' in keys
    for k in keys:
        assert m2[k] == pytest.approx(m1[k], abs=1e-6), k
    # --show-dir: one overlay per test sample, captioned
    pngs = glob.glob(osp.join(one, 'vis', '**', '*.png'), recursive=True)
    assert len(pngs) == 12, pngs[:3]


def test_dist_train_two_processes(tmp_path, tiny_config, env):
    proc = run([
        'bash', 'tools/dist_train.sh', tiny_config, '2', '--work-dir',
        str(tmp_path), '--cfg-options', *FAST, 'train_cfg.max_iters=3',
        'default_hooks.checkpoint.interval=3'
    ], {
        **env, 'PORT': str(free_port())
    })
    out = proc.stdout + proc.stderr
    assert 'gloo' in out
    assert 'Distributed training: True' in out
    assert osp.isfile(tmp_path / 'iter_3.pth')


def test_test_tool_refuses_crafted_checkpoint(tmp_path, tiny_config, env):
    path, marker = crafted_checkpoint(tmp_path)
    proc = subprocess.run([
        PY, 'tools/test.py', tiny_config, path, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *FAST
    ],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'UnsafeCheckpointError' in out and path in out
    assert 'posix.system' in out and '--unsafe-load' in out
    assert not marker.exists()


def test_test_tool_tta(trained, tmp_path, tiny_config, env):
    """--tta: 3 scales x 2 flips, masks written at the original size, the
    checkpoint loaded into the wrapped model, overlays drawn."""
    proc = run([
        PY, 'tools/test.py', tiny_config,
        str(trained / 'iter_6.pth'), '--tta', '--work-dir',
        str(tmp_path), '--out',
        str(tmp_path / 'masks'), '--show-dir', 'vis', '--cfg-options', *FAST,
        'default_hooks.visualization.interval=1'
    ], env)
    out = proc.stdout + proc.stderr
    assert 'do not match exactly' not in out  # every weight was loaded
    assert 'refer/mIoU' in read_metrics(tmp_path)
    masks = sorted((tmp_path / 'masks').glob('*.png'))
    assert len(masks) == 12
    assert {mmcv.imread(str(m), 'unchanged').shape
            for m in masks} == {(128, 128)}
    pngs = glob.glob(osp.join(tmp_path, 'vis', '**', '*.png'), recursive=True)
    assert len(pngs) == 12


def test_test_tool_refuses_mismatched_checkpoint(trained, tmp_path,
                                                 tiny_config, env):
    """A checkpoint without one tensor: tools/test.py stops and names the
    file and the key (mmengine would log it and test a model that is
    partly at its initial weights); strict_load=False opts out."""
    state, ckpt = weights(trained / 'iter_6.pth')
    key = 'decode_head.mask_decoder.iou_token.weight'
    del state[key]
    path = str(tmp_path / 'partial.pth')
    partial = dict(state_dict=state, meta=ckpt['meta'])
    add_state_dict_hash(partial)  # edited on purpose: a new hash
    torch.save(partial, path)
    args = [
        PY, 'tools/test.py', tiny_config, path, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *FAST
    ]
    proc = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'CheckpointMismatchError' in out and path in out and key in out
    assert 'strict_load = False' in out
    run(args + ['strict_load=False'], env)
