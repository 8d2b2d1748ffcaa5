"""The paper's RSRefSeg-b config (SigLIP + SAM) through tools/train.py and
tools/test.py, with random weights saved in the official file layouts
(Hugging Face SigLIP folder, segment-anything .pth) at tiny sizes, on
synthetic data written in the RRSIS-D layout."""
import glob
import json
import os.path as osp
import sys

import pytest
import torch

from rsrefseg_mm.utils import safe_torch_load
from helpers import REPO, TINY_SAM
from helpers import run_ok as run

PY = sys.executable
PAPER_B = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')


@pytest.fixture(scope='module')
def paper_setup(tmp_path_factory):
    from rsrefseg_mm.models.sam import build_sam_modules, sam_arch_settings
    from siglip_helpers import (TINY_SIGLIP, random_hf_siglip, save_hf_folder,
                                train_spiece)
    root = tmp_path_factory.mktemp('paper')
    # SigLIP as users download it: a Hugging Face folder
    folder = root / 'siglip-tiny'
    folder.mkdir()
    save_hf_folder(
        str(folder), random_hf_siglip(TINY_SIGLIP), train_spiece(str(root)))
    # SAM as segment-anything ships it: a plain state dict
    torch.manual_seed(0)
    sam = build_sam_modules(sam_arch_settings(TINY_SAM))
    torch.save(
        {
            f'{k}.{n}': v
            for k, m in sam.items() for n, v in m.state_dict().items()
        }, root / 'sam_tiny.pth')
    data = root / 'rrsisd'
    run([
        PY, 'tools/dataset_converters/synthetic_to_rrsisd.py',
        str(data), '--num-train', '8', '--num-val', '2', '--num-test', '3'
    ], _env())
    cfg = root / 'paper_tiny.py'
    cfg.write_text(f"""
_base_ = [{str(PAPER_B)!r}]
siglip_checkpoint = {str(folder)!r}
sam_checkpoint = {str(root / 'sam_tiny.pth')!r}
data_root = {str(data)!r}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch=dict(_delete_=True, **{TINY_SIGLIP!r}),
                  checkpoint=siglip_checkpoint),
    neck=dict(in_channels=32, prompt_dims=32, dense_prompt_size=(32, 32),
              norm_cfg=norm_cfg),
    decode_head=dict(sam_arch=dict(_delete_=True, **{TINY_SAM!r}),
                     checkpoint=sam_checkpoint))
pipe = [dict(type='LoadReferringImageFromFile'),
        dict(type='LoadReferringAnnotations'),
        dict(type='Resize', scale=(128, 128), keep_ratio=False),
        dict(type='PackReferringInputs')]
test_pipe = [dict(type='LoadReferringImageFromFile'),
             dict(type='Resize', scale=(128, 128), keep_ratio=False),
             dict(type='LoadReferringAnnotations'),
             dict(type='PackReferringInputs')]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipe))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipe))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=test_pipe))
train_cfg = dict(max_epochs=1, val_interval=1)
optim_wrapper = dict(type='OptimWrapper', _delete_=True,
                     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
""")
    return root, cfg


def _env():
    import os
    return {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}


def test_paper_config_trains_validates_and_tests(paper_setup):
    root, cfg = paper_setup
    work = root / 'work'
    proc = run([PY, 'tools/train.py',
                str(cfg), '--work-dir',
                str(work)], _env())
    log = proc.stdout + proc.stderr
    assert 'SigLIP custom: loaded' in log
    assert 'SAM image encoder: LoRA (r=16, alpha=16) on 10 layers' in log
    assert 'SigLIP text tower: LoRA (r=16, alpha=16) on 9 layers' in log
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    state = safe_torch_load(str(ckpt), map_location='cpu')  # allow-list
    keys = state['state_dict'].keys()
    assert 'decode_head.image_encoder.neck.0.lora_down.weight' in keys
    assert 'neck.final_proj.weight' in keys and 'neck.fuse.bn.weight' in keys
    # the SAM positional encoding is stored once, in the head
    assert not any(k.startswith('neck.pe_layer') for k in keys)
    out = root / 'test'
    run([PY, 'tools/test.py',
         str(cfg),
         str(ckpt), '--work-dir',
         str(out)], _env())
    metrics = json.load(
        open(sorted(glob.glob(osp.join(out, '*', '*.json')))[-1]))
    assert 0 <= metrics['refer/mIoU'] <= 100
