"""use_gloo_without_cuda: gloo group on CPU, torn down at exit."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

from rsrefseg_mm.utils import use_gloo_without_cuda
from helpers import TINY_CONFIG, fake_runner, free_port, load_script


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_gloo_group_created_and_destroyed_at_exit(tmp_path):
    code = textwrap.dedent('''
        import atexit
        import torch.distributed as dist
        from mmengine.config import Config
        from rsrefseg_mm.utils import use_gloo_without_cuda
        # registered first, so it runs after the helper's own exit hook
        atexit.register(
            lambda: print('initialized at exit:', dist.is_initialized()))
        cfg = Config(dict(launcher='pytorch'))
        use_gloo_without_cuda(cfg)
        print('backend:', dist.get_backend(),
              cfg.env_cfg.dist_cfg.backend,
              cfg.model_wrapper_cfg.device_ids)
    ''')
    env = dict(
        os.environ,
        RANK='0',
        WORLD_SIZE='1',
        LOCAL_RANK='0',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, '-c', code],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'backend: gloo gloo None' in proc.stdout
    assert 'initialized at exit: False' in proc.stdout


def test_no_launcher_changes_nothing():
    cfg = Config(dict(launcher='none'))
    use_gloo_without_cuda(cfg)
    assert 'env_cfg' not in cfg and 'model_wrapper_cfg' not in cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
@pytest.mark.parametrize('tool,args', [('tools/train.py', []),
                                       ('tools/test.py', ['ckpt.pth'])])
def test_tools_merge_cfg_options_before_the_gloo_switch(
        tool, args, monkeypatch, tmp_path):
    """--cfg-options overrides are seen by use_gloo_without_cuda: the DDP
    wrapper it builds takes find_unused_parameters from the override, and a
    backend override to nccl is still switched to gloo on CPU."""
    module = load_script(tool)
    seen = {}
    monkeypatch.setattr(module, 'Runner', fake_runner(seen))
    monkeypatch.setattr('sys.argv', [
        tool, TINY_CONFIG, *args, '--launcher', 'slurm', '--work-dir',
        str(tmp_path), '--cfg-options', 'find_unused_parameters=False',
        'env_cfg.dist_cfg.backend=nccl'
    ])
    assert Config.fromfile(TINY_CONFIG).find_unused_parameters is True
    module.main()
    cfg = seen['cfg']
    assert cfg.model_wrapper_cfg.find_unused_parameters is False
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
