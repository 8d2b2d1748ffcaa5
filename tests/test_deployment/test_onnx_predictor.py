"""OnnxReferringPredictor gives the PyTorch ReferringPredictor's masks, and
``python -m rsrefseg_deploy`` runs with torch and OpenMMLab blocked."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_core.deploy_info import DeployInfoError
from rsrefseg_deploy import OnnxReferringPredictor
from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
from helpers import REPO, load_script, write_geotiff
from siglip_helpers import TINY_SIGLIP2, paper_tiny_config

TEXTS = [
    'the red circle', 'a blue square at the top left of the image',
    'the green triangle'
]
#: Modules the deployment may not import.
BLOCKED = ('torch', 'mmcv', 'mmengine', 'mmseg', 'mmpretrain', 'rsrefseg_mm')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)
    tif = write_geotiff(tmp_path_factory.mktemp('geo') / 'scene.tif')
    return dict(photo=(photo, None), geotiff=(tif, (3, 2, 1)))


@pytest.mark.parametrize('kind', ['photo', 'geotiff'])
@pytest.mark.parametrize('num_texts', [1, 3])
def test_onnx_predictor_equals_pytorch(exported, images, kind, num_texts):
    model, model_dir, _ = exported
    image, bands = images[kind]
    texts = TEXTS[:num_texts]
    ours = OnnxReferringPredictor(model_dir)
    ours.set_image(image, bands)
    got = ours.predict(texts)
    torch_predictor = ReferringPredictor(model)
    torch_predictor.set_image(image, bands)
    want = torch_predictor.predict(texts)
    for g, w in zip(got, want):
        prob = w.seg_logits.data[0].numpy()
        assert g.text == w.text and g.mask.shape == prob.shape
        assert np.abs(g.probability - prob).max() <= 1e-3
        mismatch = (g.mask != w.pred_sem_seg.data[0].numpy()).mean()
        assert mismatch <= 1e-3
        assert np.abs(g.global_map - w.global_map.data[0].numpy()).max() \
            <= 1e-3
    if kind == 'geotiff':  # georeference and nodata as the PyTorch path
        assert got[0].image.crs == want[0].metainfo['crs']
        assert got[0].image.transform == want[0].metainfo['geo_transform']
        for g in got:
            assert (g.mask[:, :7] == 0).all()
            assert (g.probability[:, :7] == 0).all()
            assert (g.probability[:, 7:] > 0).all()
            assert (g.global_map[:, :7] == 0).all()


@pytest.mark.parametrize('lowercase', [True, False])
def test_siglip2_gemma_tokenizer(tmp_path, gemma_spiece, images, lowercase):
    """A SigLIP 2 backbone exports its Gemma tokenizer (and its case
    setting): ONNX Runtime tokenizes and answers as PyTorch does."""
    config = paper_tiny_config(tmp_path / 'siglip2.py', gemma_spiece,
                               TINY_SIGLIP2, dict(lowercase=lowercase))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(
        dict(state_dict=model.state_dict(), meta=dict()),
        tmp_path / 'model.pth')
    load_script('tools/deployment/export_onnx.py').main([
        config,
        str(tmp_path / 'model.pth'), '--out-dir',
        str(tmp_path / 'onnx'), '--dynamic-expressions'
    ])
    info = json.loads((tmp_path / 'onnx' / 'deploy.json').read_text())
    assert info['tokenizer']['kind'] == 'gemma-sentencepiece'
    assert info['tokenizer']['lowercase'] is lowercase
    texts = ['The Red Circle', 'the red circle', 'a BLUE square']
    ours = OnnxReferringPredictor(str(tmp_path / 'onnx'))
    torch_predictor = ReferringPredictor(
        init_referring_model(config, str(tmp_path / 'model.pth')))
    ids, _ = ours._tokens(texts)
    want_ids, _ = torch_predictor.model.backbone.tokenize(texts)
    np.testing.assert_array_equal(ids, want_ids.numpy())
    assert bool((ids[0] == ids[1]).all()) is lowercase  # case read or not
    photo, _ = images['photo']
    ours.set_image(photo)
    torch_predictor.set_image(photo)
    for g, w in zip(ours.predict(texts), torch_predictor.predict(texts)):
        prob = w.seg_logits.data[0].numpy()
        assert np.abs(g.probability - prob).max() <= 1e-3
        assert (g.mask != w.pred_sem_seg.data[0].numpy()).mean() <= 1e-3


def test_errors(exported, images):
    _, model_dir, _ = exported
    ours = OnnxReferringPredictor(model_dir)
    with pytest.raises(RuntimeError, match='set_image'):
        ours.predict('the red circle')
    ours.set_image(images['photo'][0])
    with pytest.raises(ValueError, match='expression 1'):
        ours.predict(['the red circle', '  '])
    with pytest.raises(FileNotFoundError, match='export_onnx.py'):
        OnnxReferringPredictor(os.path.dirname(model_dir))
    for kwargs in (dict(max_batch=0), dict(cache_size=-1),
                   dict(max_read_size=0)):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            OnnxReferringPredictor(model_dir, **kwargs)


def test_changed_or_redirected_model_files_are_refused(exported, tmp_path):
    _, model_dir, _ = exported
    copy = tmp_path / 'model'
    shutil.copytree(model_dir, copy)
    info = json.loads((copy / 'deploy.json').read_text())
    assert set(info['files']) >= {
        'image_encoder.onnx', 'text_encoder.onnx', 'decoder.onnx'
    }
    # 4 KB of 0xFF inside the decoder's weights: loads, answers wrongly
    data = bytearray((copy / 'decoder.onnx').read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b'\xff' * 4096
    (copy / 'decoder.onnx').write_bytes(bytes(data))
    with pytest.raises(DeployInfoError, match='decoder.onnx.*sha256'):
        OnnxReferringPredictor(str(copy))
    # a deploy.json pointing its decoder elsewhere on the machine
    shutil.copy(os.path.join(model_dir, 'decoder.onnx'), copy)
    info['decoder'] = os.path.join(model_dir, 'decoder.onnx')
    (copy / 'deploy.json').write_text(json.dumps(info))
    with pytest.raises(DeployInfoError, match='plain file name'):
        OnnxReferringPredictor(str(copy))
    info['decoder'], info['threshold'] = 'decoder.onnx', 'nan'
    (copy / 'deploy.json').write_text(json.dumps(info))
    with pytest.raises(DeployInfoError, match='threshold'):
        OnnxReferringPredictor(str(copy))


#: Refused by both runtimes (``"..."`` was answered by ONNX Runtime).
BAD_EXPRESSIONS = ['', '   ', '...', '&nbsp;', '&amp;#32;', '?!', None]


@pytest.mark.parametrize('bad', BAD_EXPRESSIONS)
def test_both_runtimes_refuse_the_same_expressions(exported, images, bad):
    model, model_dir, _ = exported
    photo = images['photo'][0]
    messages = []
    for predictor in (OnnxReferringPredictor(model_dir),
                      ReferringPredictor(model)):
        predictor.set_image(photo)
        with pytest.raises(ValueError, match='^expression 1: ') as err:
            predictor.predict(['the red circle', bad])
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_both_runtimes_cache_under_the_same_keys(exported, images):
    model, model_dir, _ = exported
    tif = images['geotiff'][0]
    ours = OnnxReferringPredictor(model_dir, cache_size=8)
    theirs = ReferringPredictor(model, cache_size=8)
    assert ours.max_read_size == theirs.max_read_size  # 'auto' alike
    for p in (ours, theirs):
        p.max_read_size = None
    reads = [
        dict(bands=(3, 2, 1)),
        dict(bands=(1, 2, 3)),
        dict(bands=(3, 2, 1), stretch=(1, 99)),
        dict(bands=(3, 2, 1), max_read_size=60)
    ]
    for runtime in (ours, theirs):
        for read in reads:
            read = dict(read)
            runtime.max_read_size = read.pop('max_read_size', None)
            runtime.set_image(tif, **read)
            assert not runtime.from_cache, read
            runtime.set_image(tif, **read)  # same content and arguments
            assert runtime.from_cache, read
        assert len(runtime.cache) == len(reads)
        assert runtime.image.img.shape[:2] == (45, 60)
    assert list(ours.cache) == list(theirs.cache)


BLOCKER = '''
import importlib.abc
import runpy
import sys

BLOCKED = {blocked!r}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'blocked in the deployment test: {{name}}')


sys.meta_path.insert(0, Block())
sys.argv = ['rsrefseg_deploy'] + {argv!r}
runpy.run_module('rsrefseg_deploy', run_name='__main__', alter_sys=True)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print('BLOCKED_OK')
'''


def test_cli_without_torch_or_openmmlab(exported, images, tmp_path):
    _, model_dir, _ = exported
    out = tmp_path / 'out'
    argv = [
        images['geotiff'][0], 'the red circle', 'the green triangle',
        '--model-dir', model_dir, '--out-dir',
        str(out), '--bands', '3', '2', '1'
    ]
    proc = subprocess.run(
        [sys.executable, '-c',
         BLOCKER.format(blocked=BLOCKED, argv=argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'BLOCKED_OK' in proc.stdout
    names = sorted(p.name for p in out.iterdir())
    for i in (0, 1):
        for suffix in ('_mask.png', '_overlay.png', '_heatmap.png',
                       '_mask.tif', '_mask.qml', '_mask.geojson'):
            assert f'scene_{i}{suffix}' in names
    with rasterio.open(out / 'scene_0_mask.tif') as src, \
            rasterio.open(images['geotiff'][0]) as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
