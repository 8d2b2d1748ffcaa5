"""tools/train.py and tools/test.py on an RRSIS-D download as it comes:
images a pixel or 13 off their masks and a missing image file (REFER layout
written from synthetic scenes by tools/dataset_converters/
synthetic_to_rrsisd.py, then altered)."""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest

from helpers import REPO, load_script, recanvas_image
from helpers import run_ok as run

PY = sys.executable
#: train 00000-00015, val 00016-00019, test 00020-00027 (128x128 masks)
OFF = {
    '00000.jpg': (129, 128),  # train: one row more
    '00001.jpg': (128, 115),  # train: 13 columns fewer
    '00020.jpg': (127, 128),  # test: one row fewer
}
MISSING = '00002.jpg'  # train
ARGS = [
    'train_dataloader.batch_size=4',
    'train_cfg.max_iters=5',  # 15 train samples: the 5th batch starts epoch 2
    'train_cfg.val_interval=1000',
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=5',
    'default_hooks.checkpoint.save_best=None',
    'randomness.deterministic=True',
]


@pytest.fixture(scope='module')
def download(tmp_path_factory, tiny_config):
    """The data root and a config of the tiny model reading it."""
    root = tmp_path_factory.mktemp('rrsisd_download')
    tool = load_script('tools/dataset_converters/synthetic_to_rrsisd.py')
    assert tool.main([
        str(root), '--num-train', '16', '--num-val', '4', '--num-test', '8',
        '--num-objects', '3', '4', '--expression-types', 'attribute'
    ]) == 0
    img_dir = root / 'images' / 'rrsisd' / 'JPEGImages'
    for name, shape in OFF.items():
        recanvas_image(img_dir / name, shape)
    (img_dir / MISSING).unlink()
    config = root / 'tiny_rrsisd_download.py'
    config.write_text(f'''_base_ = [{tiny_config!r}]
data_root = {str(root)!r}
train_pipeline = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='PackReferringInputs'),
]
test_pipeline = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='RRSISDDataset', data_root=data_root,
    split='train', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='RRSISDDataset', data_root=data_root,
    split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(
    _delete_=True, type='RRSISDDataset', data_root=data_root,
    split='test', test_mode=True, pipeline=test_pipeline))
''')
    return root, str(config)


def test_train_and_test_on_download(download, tmp_path, env):
    root, config = download
    work = tmp_path / 'train'
    train = [
        PY, 'tools/train.py', config, '--work-dir',
        str(work), '--cfg-options', *ARGS
    ]
    # the missing image stops the run before training, naming it
    proc = subprocess.run(
        train, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "RRSISDDataset(split='train'): 1 of 16 image files are " \
        'missing (1 of 16 samples)' in out
    assert MISSING in out and 'skip_missing_images=True' in out
    assert not osp.exists(work / 'iter_5.pth')

    # skipped on request: trained over two epochs, each report once
    proc = run(train + ['train_dataloader.dataset.skip_missing_images=True'],
               env)
    out = proc.stdout + proc.stderr
    assert out.count("RRSISDDataset(split='train'): skipped 1 of 16 "
                     'samples (skip_missing_images=True)') == 1
    assert out.count("RRSISDDataset(split='train'): 2 of 15 images (2 of 15 "
                     'samples) differ in size from their mask by up to 13 '
                     'px per side') == 1
    assert out.count('differ in size from their mask') == 1  # val: none
    assert 'Iter(train) [5/5]' in out
    assert osp.isfile(work / 'iter_5.pth')

    proc = run([
        PY, 'tools/test.py', config,
        str(work / 'iter_5.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(tmp_path / 'masks'), '--cfg-options', *ARGS
    ], env)
    out = proc.stdout + proc.stderr
    assert out.count("RRSISDDataset(split='test'): 1 of 8 images (1 of 8 "
                     'samples) differ in size from their mask by up to 1 '
                     'px per side') == 1
    files = sorted(glob.glob(str(tmp_path / 'test' / '*' / '*.json')))
    metrics = json.load(open(files[-1]))
    assert 0 <= metrics['refer/oIoU'] <= 100
    assert 0 <= metrics['refer/mIoU'] <= 100
    print(f"refer/oIoU {metrics['refer/oIoU']:.2f} "
          f"refer/mIoU {metrics['refer/mIoU']:.2f}")
    # predictions at each image's own size, the misaligned one included
    import cv2
    sizes = {
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape
        for p in (tmp_path / 'masks').glob('*.png')
    }
    assert sizes == {(128, 128), (127, 128)}


def test_train_and_test_with_no_target_pairs(download, tmp_path, env):
    """Generalized referring on the download: 5 no-target pairs join the 15
    training samples (no_target_ratio=0.25), and the test split with pairs
    is scored with N-acc / T-acc."""
    root, config = download
    work = tmp_path / 'gres'
    args = [a for a in ARGS if not a.startswith('train_cfg.max_iters')]
    proc = run([
        PY, 'tools/train.py', config, '--work-dir',
        str(work), '--cfg-options', *args, 'train_cfg.max_iters=2',
        'default_hooks.checkpoint.interval=2',
        'train_dataloader.dataset.skip_missing_images=True',
        'train_dataloader.dataset.no_target_ratio=0.25'
    ], env)
    out = proc.stdout + proc.stderr
    assert out.count("RRSISDDataset(split='train'): added 5 no-target "
                     'samples (no_target_ratio=0.25, no_target_seed=0) to '
                     '15') == 1
    assert 'Iter(train) [2/2]' in out
    proc = run([
        PY, 'tools/test.py', config,
        str(work / 'iter_2.pth'), '--work-dir',
        str(tmp_path / 'test'), '--cfg-options', *args,
        'test_dataloader.dataset.no_target_ratio=0.5',
        'test_evaluator.generalized=True'
    ], env)
    out = proc.stdout + proc.stderr
    assert "RRSISDDataset(split='test'): added 8 no-target samples" in out
    files = sorted(glob.glob(str(tmp_path / 'test' / '*' / '*.json')))
    metrics = json.load(open(files[-1]))
    for key in ('refer/gIoU', 'refer/N-acc', 'refer/T-acc'):
        assert 0 <= metrics[key] <= 100, key
