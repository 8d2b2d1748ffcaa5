"""Checkpoints are written atomically, and a truncated one is an error that
names it: a training run killed while saving, then ``--resume``."""
import os
import sys
import zipfile

import pytest
import torch
from mmengine.runner import CheckpointLoader

from rsrefseg_mm.utils import (CorruptCheckpointError, allow_unsafe_load,
                               safe_torch_load)
from helpers import FAST, REPO, TINY_CONFIG

#: Imported by the derived config: the second checkpoint write stops the
#: process (SIGKILL, no clean-up) after half of its bytes.
KILLER = '''
import os
import signal

from mmengine.fileio.backends import local_backend

_put = local_backend.LocalBackend.put
_saves = []


def put(self, obj, filepath):
    if '.pth' in str(filepath):
        _saves.append(filepath)
        if len(_saves) == 2:
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return _put(self, obj, filepath)


local_backend.LocalBackend.put = put
'''


def _config(tmp_path, kill: bool) -> str:
    imports = "['rsrefseg_mm', 'kill_on_second_save']" if kill else \
        "['rsrefseg_mm']"
    path = tmp_path / f'tiny_kill_{kill}.py'
    path.write_text(f"""
_base_ = [{TINY_CONFIG!r}]
custom_imports = dict(imports={imports}, allow_failed_imports=False)
train_cfg = dict(max_iters=4, val_interval=1000)
default_hooks = dict(
    checkpoint=dict(interval=2, max_keep_ckpts=3, save_best=None),
    visualization=dict(draw=False))
""")
    return str(path)


def _run(args, tmp_path):
    import subprocess
    env = dict(
        os.environ,
        PYTHONPATH=f'{REPO}{os.pathsep}{tmp_path}',
        OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, 'tools/train.py', *args],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


@pytest.fixture(scope='module')
def killed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('atomic')
    (tmp / 'kill_on_second_save.py').write_text(KILLER)
    work = tmp / 'work'
    opts = ['--cfg-options', *FAST[:4]]
    proc = _run([_config(tmp, True), '--work-dir', str(work), *opts], tmp)
    return tmp, work, opts, proc


def test_killed_save_leaves_no_truncated_checkpoint(killed_run):
    _, work, _, proc = killed_run
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL mid-write
    names = sorted(os.listdir(work))
    assert 'iter_2.pth' in names and 'iter_4.pth' not in names
    # the partial bytes are in a hidden temporary file, never under a
    # checkpoint's name; last_checkpoint names the complete one
    assert any(n.startswith('.iter_4.pth.') for n in names)
    last = (work / 'last_checkpoint').read_text().strip()
    assert last.endswith('iter_2.pth')
    assert 'state_dict' in safe_torch_load(last, map_location='cpu')


def test_resume_after_the_kill(killed_run):
    tmp, work, opts, _ = killed_run
    proc = _run(
        [_config(tmp, False), '--work-dir',
         str(work), '--resume', *opts], tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    state = safe_torch_load(str(work / 'iter_4.pth'), map_location='cpu')
    assert state['meta']['iter'] == 4


def test_truncated_checkpoint_is_named_with_the_previous(tmp_path):
    good, cut = tmp_path / 'iter_2.pth', tmp_path / 'iter_4.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(256))), good)
    torch.save(dict(state_dict=dict(w=torch.ones(256))), cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError) as exc:
        safe_torch_load(str(cut))
    msg = str(exc.value)
    assert str(cut) in msg and 'truncated or corrupt' in msg
    assert str(good) in msg  # the previous checkpoint is suggested
    garbage = tmp_path / 'notes.pth'
    garbage.write_bytes(b'not a checkpoint at all' * 8)
    with pytest.raises(CorruptCheckpointError, match='notes.pth'):
        safe_torch_load(str(garbage))


def _zip_with(path, replace):
    """A copy of a torch.save zip with members replaced (None drops one)."""
    source = str(path) + '.src'
    torch.save(dict(state_dict=dict(w=torch.zeros(4))), source)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, 'w') as out:
        for name in src.namelist():
            data = replace.get(name.split('/', 1)[1], src.read(name))
            if data is not None:
                out.writestr(name, data)
    os.remove(source)


def _legacy_cut(path):
    torch.save(
        dict(state_dict=dict(w=torch.zeros(64))),
        path,
        _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:200])


#: How each corrupt file is made from a good one.
CORRUPT = {
    'no data.pkl': lambda p: _zip_with(p, {'data.pkl': None}),
    'cut data.pkl': lambda p: _zip_with(p, {'data.pkl': b'\x80\x02]q'}),
    'missing storage': lambda p: _zip_with(p, {'data/0': None}),
    'legacy file cut': _legacy_cut,
}


@pytest.mark.parametrize('make', CORRUPT.values(), ids=CORRUPT.keys())
@pytest.mark.parametrize('trusted', [False, True])
def test_corrupt_files_are_named(make, trusted, tmp_path):
    """Broken zip structure, an unreadable pickle or a cut legacy file:
    CorruptCheckpointError naming the file, through mmengine's loader too,
    with or without the unsafe opt-in."""
    path = tmp_path / 'iter_8.pth'
    make(path)
    with allow_unsafe_load(trusted):
        for load in (safe_torch_load, CheckpointLoader.load_checkpoint):
            with pytest.raises(CorruptCheckpointError) as exc:
                load(str(path))
            assert str(exc.value).startswith(f'{path}: cannot be read')
