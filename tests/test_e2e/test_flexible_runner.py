"""tools/dist_train.sh with mmengine's FlexibleRunner on the CPU: two
processes over gloo train the tiny RSRefSeg 2 under FSDPStrategy (PyTorch
FSDP, ``device_id='cpu'``) and, where deepspeed is installed, under the
authors' DeepSpeedStrategy (ZeRO-2, bf16, DeepSpeed's CPU accelerator)."""
import importlib.util
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_mm.utils import safe_torch_load
from helpers import FAST, REPO, free_port
from helpers import run_ok as run

CFG_DIR = REPO / 'configs' / 'rsrefseg2'
TINY2 = 'rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-' \
    '128x128'


def dist_train(config, work_dir, env, iters=2):
    return run([
        'bash', 'tools/dist_train.sh',
        str(config), '2', '--work-dir',
        str(work_dir), '--cfg-options', *FAST, f'train_cfg.max_iters={iters}',
        f'default_hooks.checkpoint.interval={iters}'
    ], {
        **env, 'PORT': str(free_port())
    },
               timeout=300)


def test_fsdp_two_processes_on_cpu(tmp_path, env):
    """Both ranks train sharded; rank 0 writes the whole state dict, which
    the base config's model loads strictly."""
    proc = dist_train(CFG_DIR / f'{TINY2}_fsdp.py', tmp_path, env)
    out = proc.stdout + proc.stderr
    assert 'Distributed training: True' in out and 'gloo' in out
    assert "type='ScalarSafeFSDP'" in out and "device_id='cpu'" in out
    assert 'Iter(train) [2/2]' in out
    ckpt = safe_torch_load(str(tmp_path / 'iter_2.pth'), map_location='cpu')
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(str(CFG_DIR / f'{TINY2}.py')).model)
    state = ckpt['state_dict']
    assert not any('_fsdp' in k or 'flat_param' in k for k in state)
    model.load_state_dict(state, strict=True)
    # the scalars FSDP leaves out are whole and were trained
    assert state['neck.region_text_logit_scale'].shape == torch.Size([])
    assert 'optimizer' in ckpt


@pytest.mark.skipif(
    importlib.util.find_spec('deepspeed') is None,
    reason='deepspeed is not installed (requirements/deepspeed.txt)')
def test_deepspeed_zero2_bf16_two_processes_on_cpu(tmp_path, env):
    """DeepSpeed's CPU accelerator, gloo: ZeRO-2 partitions the optimizer
    state of the bf16 model over the two ranks (one file per rank)."""
    # where this interpreter finds deepspeed (site-packages or a --target)
    site = os.path.dirname(
        os.path.dirname(importlib.util.find_spec('deepspeed').origin))
    proc = dist_train(
        CFG_DIR / f'{TINY2}_deepspeed-zero2-bf16.py', tmp_path, {
            **env, 'PYTHONPATH': os.pathsep.join([env['PYTHONPATH'], site]),
            'DS_ACCELERATOR': os.environ.get('DS_ACCELERATOR', 'cpu')
        })
    out = proc.stdout + proc.stderr
    assert 'Creating torch.bfloat16 ZeRO stage 2 optimizer' in out
    assert 'Iter(train) [2/2]' in out
    folder = tmp_path / 'iter_2.pth'
    assert (folder / 'mp_rank_00_model_states.pt').is_file()
    assert len(list(folder.glob('bf16_zero_pp_rank_*_optim_states.pt'))) == 2
