"""rsrefseg_mm.apis and demo/image_demo.py on a tiny random-initialised
model."""
import json
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_mm.apis import inference_referring, init_referring_model
from helpers import REPO


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory, tiny_config):
    """A checkpoint in the runner's format (state_dict + meta)."""
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(tiny_config).model)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(
                dataset_meta=dict(
                    classes=('background', 'target'),
                    palette=[[0, 0, 0], [255, 0, 0]]))), path)
    return str(path), model.state_dict()


@pytest.fixture(scope='module')
def model(tiny_config, tiny_ckpt):
    return init_referring_model(tiny_config, tiny_ckpt[0], device='cpu')


def test_init_loads_checkpoint_weights(model, tiny_ckpt):
    for k, v in tiny_ckpt[1].items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_inference_array_and_path_give_same_mask(model, tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)  # non-square
    path = tmp_path / 'img.png'
    mmcv.imwrite(img, str(path))
    a = inference_referring(model, img, 'the red circle')
    b = inference_referring(model, str(path), 'the red circle')
    assert a.pred_sem_seg.data.shape == (1, 96, 150)
    assert a.global_map.data.shape == (1, 96, 150)
    assert a.text == 'the red circle'
    assert set(a.pred_sem_seg.data.unique().tolist()) <= {0, 1}
    torch.testing.assert_close(a.seg_logits.data, b.seg_logits.data)
    # the mask is the thresholded probability map (mmseg stores the sigmoid
    # in seg_logits for one-channel heads)
    assert torch.equal(a.pred_sem_seg.data[0].bool(),
                       a.seg_logits.data[0] > 0.5)


def test_inference_depends_on_text(model):
    img = np.random.default_rng(1).integers(
        0, 255, (128, 128, 3), dtype=np.uint8)
    r1, r2 = inference_referring(model, [img, img],
                                 ['the red circle', 'the largest white cross'])
    assert not torch.allclose(r1.global_map.data, r2.global_map.data)


@pytest.mark.parametrize('text', ['', '   '])
def test_empty_expression_is_an_error(model, text):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match='expression is empty'):
        inference_referring(model, img, text)


def test_missing_image_and_checkpoint_errors(model, tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.png'):
        inference_referring(model, str(tmp_path / 'nope.png'), 'the tank')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        init_referring_model(tiny_config, str(tmp_path / 'missing.pth'))


def test_image_demo_cli_single_and_batch(tiny_config, tiny_ckpt, tmp_path):
    img = np.random.default_rng(2).integers(
        0, 255, (80, 100, 3), dtype=np.uint8)
    mmcv.imwrite(img, str(tmp_path / 'scene.png'))
    out = tmp_path / 'out'
    cmd = [
        sys.executable, 'demo/image_demo.py',
        str(tmp_path / 'scene.png'), 'the blue square', tiny_config,
        tiny_ckpt[0], '--out-dir',
        str(out)
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mask = mmcv.imread(str(out / 'scene_mask.png'), flag='unchanged')
    assert mask.shape == (80, 100) and set(np.unique(mask)) <= {0, 255}
    overlay = mmcv.imread(str(out / 'scene_overlay.png'))
    # enlarged 3x (narrower than 256 px), caption band above
    assert overlay.shape[1] == 300 and overlay.shape[0] > 240
    assert (out / 'scene_heatmap.png').is_file()

    pairs = tmp_path / 'pairs.jsonl'
    pairs.write_text(
        json.dumps(dict(image='scene.png', text='the red circle')) + '\n' +
        json.dumps(dict(image='scene.png', text='the white cross')) + '\n')
    out2 = tmp_path / 'out2'
    cmd = [
        sys.executable, 'demo/image_demo.py', '--batch',
        str(pairs), tiny_config, tiny_ckpt[0], '--out-dir',
        str(out2)
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # two expressions of the same image do not overwrite each other
    assert len(list(out2.glob('*_mask.png'))) == 2
    assert '2 expression(s) on 1 image(s) encoded' in proc.stdout


def test_image_demo_batch_groups_rows_by_image(model, tiny_config, tiny_ckpt,
                                               tmp_path):
    rng = np.random.default_rng(3)
    for name in ('a', 'b'):
        mmcv.imwrite(
            rng.integers(0, 255, (64, 72, 3), dtype=np.uint8),
            str(tmp_path / f'{name}.png'))
    rows = [('a.png', 'the red circle'), ('b.png', 'the red circle'),
            ('a.png', 'the white cross'), ('b.png', 'a blue square')]
    pairs = tmp_path / 'pairs.csv'
    pairs.write_text('image,text\n' + ''.join(f'{i},{t}\n' for i, t in rows))
    out = tmp_path / 'out'
    cmd = [
        sys.executable, 'demo/image_demo.py', '--batch',
        str(pairs), tiny_config, tiny_ckpt[0], '--out-dir',
        str(out)
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '4 expression(s) on 2 image(s) encoded' in proc.stdout
    for i, (name, text) in enumerate(rows):  # outputs keep the row order
        got = mmcv.imread(
            str(out / f'{i:05d}_{name[0]}_mask.png'), flag='unchanged')
        want = inference_referring(model, str(tmp_path / name), text)
        np.testing.assert_array_equal(got > 0,
                                      want.pred_sem_seg.data[0].numpy() > 0)


@pytest.mark.parametrize('fmt', ['jsonl', 'csv'])
def test_image_demo_batch_checks_every_row_before_writing(
        tiny_config, tiny_ckpt, tmp_path, fmt):
    """A NUL-only expression (empty once cleaned) and a missing image in
    later rows: refused naming their lines, with nothing written."""
    from helpers import load_script
    mmcv.imwrite(np.zeros((32, 32, 3), np.uint8), str(tmp_path / 'a.png'))
    rows = [('a.png', 'the red circle'), ('a.png', 'the white cross'),
            ('a.png', '\x00'), ('gone.png', 'the blue square'),
            ('a.png', '   ')]
    pairs = tmp_path / f'pairs.{fmt}'
    if fmt == 'jsonl':  # a blank line before the last two rows
        lines = [json.dumps(dict(image=i, text=t)) for i, t in rows]
        pairs.write_text('\n'.join(lines[:3] + [''] + lines[3:]) + '\n')
        bad = (3, 5, 6)
    else:  # a quoted expression over two lines in the first row
        pairs.write_text('image,text\na.png,"the red\ncircle"\n' +
                         ''.join(f'{i},{t}\n' for i, t in rows[1:]))
        bad = (5, 6, 7)  # the header is line 1
    out = tmp_path / 'out'
    with pytest.raises(ValueError) as exc:
        load_script('demo/image_demo.py').main([
            '--batch',
            str(pairs), tiny_config, tiny_ckpt[0], '--out-dir',
            str(out)
        ])
    msg = str(exc.value)
    assert msg.startswith(f'3 of the 5 rows of {pairs} cannot be segmented; '
                          'nothing was written')
    lines = msg.split('\n')[1:]
    assert [line.strip().split(': ')[0] for line in lines] == \
        [f'{pairs}:{n}' for n in bad]
    assert 'empty after ftfy / HTML clean-up' in lines[0]
    assert f'image {tmp_path / "gone.png"} not found' in lines[1]
    assert 'the expression is empty or missing' in lines[2]
    assert not out.exists()
