"""A model with a presence output (the generalized-referring tiny config,
random weights) exports a decoder graph with ``presence``: ONNX Runtime
reports the PyTorch predictor's presence, and an expression below the
threshold gets the same empty mask; a bad ``presence_threshold`` in
deploy.json is refused by name."""
import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
import torch

from rsrefseg_core.deploy_info import DeployInfoError
from rsrefseg_deploy import OnnxReferringPredictor
from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
from helpers import (GRES_CONFIG, REPO, load_script, perturbed_model,
                     spread_presence)

TEXTS = [
    f'the {c} {s}' for c in ('red', 'blue', 'green', 'white')
    for s in ('circle', 'square')
]


@pytest.fixture(scope='module')
def image():
    return np.random.default_rng(0).integers(0, 255, (96, 120, 3), np.uint8)


@pytest.fixture(scope='module')
def exported_presence(tmp_path_factory, image):
    root = tmp_path_factory.mktemp('gres')
    model = perturbed_model(GRES_CONFIG)
    spread_presence(model, image, TEXTS)
    ckpt = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = root / 'onnx'
    tool = load_script('tools/deployment/export_onnx.py')
    tool.main([
        GRES_CONFIG,
        str(ckpt), '--out-dir',
        str(out), '--dynamic-expressions'
    ])
    return init_referring_model(GRES_CONFIG, str(ckpt)), str(out)


def test_decoder_graph_has_presence(exported_presence):
    model, out = exported_presence
    with open(f'{out}/deploy.json') as f:
        deploy = json.load(f)
    assert deploy['presence_threshold'] == \
        model.decode_head.presence_cfg['threshold'] == 0.5
    assert deploy['scene_presence_threshold'] == \
        model.decode_head.presence_cfg['scene_threshold'] == \
        OnnxReferringPredictor(out).scene_presence_threshold == \
        ReferringPredictor(model).scene_presence_threshold
    graph = onnx.load(f'{out}/decoder.onnx').graph
    outputs = {o.name: o for o in graph.output}
    assert list(outputs) == ['logits', 'global_map', 'presence']
    dims = outputs['presence'].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ['num_expressions']


def assert_same_as_pytorch(got, want, threshold):
    for g, w in zip(got, want):
        assert g.text == w.text
        assert abs(g.presence - w.metainfo['presence']) <= 1e-5, g.text
        prob = w.seg_logits.data[0].numpy()
        assert np.abs(g.probability - prob).max() <= 1e-3, g.text
        assert (g.mask != w.pred_sem_seg.data[0].numpy()).mean() <= 1e-3
        if g.presence < threshold:  # gated: nothing, exactly as PyTorch
            assert g.mask.sum() == 0 and g.probability.max() == 0
            assert w.pred_sem_seg.data.sum() == 0


def test_onnx_presence_equals_pytorch(exported_presence, image):
    model, out = exported_presence
    ours = OnnxReferringPredictor(out)
    assert ours.presence_threshold == 0.5
    ours.set_image(image)
    got = ours.predict(TEXTS)
    theirs = ReferringPredictor(model)
    theirs.set_image(image)
    want = theirs.predict(TEXTS)
    probs = [g.presence for g in got]
    # four expressions on each side of the threshold, none near it
    assert sum(p < 0.5 for p in probs) == 4, probs
    assert min(abs(p - 0.5) for p in probs) > 1e-3, probs
    # the present ones are not empty (the gating is what empties masks)
    assert all(g.probability.max() > 0 for g in got if g.presence >= 0.5)
    assert_same_as_pytorch(got, want, 0.5)
    # one expression per call: the same answers
    for text in (TEXTS[probs.index(min(probs))],
                 TEXTS[probs.index(max(probs))]):
        assert_same_as_pytorch([ours.predict(text)], [theirs.predict(text)],
                               0.5)


def test_model_without_presence_reports_none(exported, tmp_path):
    _, model_dir, _ = exported
    with open(f'{model_dir}/deploy.json') as f:
        assert json.load(f)['presence_threshold'] is None
    ours = OnnxReferringPredictor(model_dir)
    assert ours.presence_threshold is None
    assert ours.decoder_outputs == ['logits', 'global_map']
    ours.set_image(np.zeros((64, 64, 3), np.uint8))
    assert ours.predict('the red circle').presence is None


@pytest.mark.parametrize('bad', ['nan', 0, 1, 1.5, -0.2, '0.5', True])
def test_bad_presence_threshold_is_refused(exported_presence, tmp_path, bad):
    _, out = exported_presence
    copy = tmp_path / 'model'
    shutil.copytree(out, copy)
    info = json.loads((copy / 'deploy.json').read_text())
    info['presence_threshold'] = float(bad) if bad == 'nan' else bad
    (copy / 'deploy.json').write_text(json.dumps(info))
    with pytest.raises(
            DeployInfoError,
            match=r'deploy\.json: presence_threshold must be a finite'):
        OnnxReferringPredictor(str(copy))


def test_folder_without_text_filter_cannot_gate(exported_presence, tmp_path):
    """A folder exported before the text filter was recorded answers as
    before, and asking it for the filter gate says to export again."""
    from rsrefseg_core.scene import ScenePredictor
    _, out = exported_presence
    copy = tmp_path / 'model'
    shutil.copytree(out, copy)
    info = json.loads((copy / 'deploy.json').read_text())
    assert set(info['text_filter']) == {'scale', 'bias'}
    del info['text_filter']
    (copy / 'deploy.json').write_text(json.dumps(info))
    runtime = OnnxReferringPredictor(str(copy))
    scene = ScenePredictor(
        runtime, crop_size=64, progress=False, filter_gate=0.0)
    scene.set_scene(np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(ValueError, match='records no text_filter.*export'):
        scene.predict(TEXTS[0])
    scene.close()


def test_presence_output_without_threshold_is_refused(exported_presence,
                                                      tmp_path):
    _, out = exported_presence
    copy = tmp_path / 'model'
    shutil.copytree(out, copy)
    info = json.loads((copy / 'deploy.json').read_text())
    info['presence_threshold'] = info['scene_presence_threshold'] = None
    (copy / 'deploy.json').write_text(json.dumps(info))
    with pytest.raises(
            DeployInfoError,
            match=r'deploy\.json: the decoder graph .* presence_threshold'):
        OnnxReferringPredictor(str(copy))


def test_cli_prints_presence(exported_presence, image, tmp_path, capsys):
    from rsrefseg_deploy.__main__ import main
    _, out = exported_presence
    path = tmp_path / 'scene.png'
    cv2.imwrite(str(path), image)
    ours = OnnxReferringPredictor(out)
    ours.set_image(str(path))
    probs = {r.text: r.presence for r in ours.predict(TEXTS)}
    argv = ['--model-dir', out, '--out-dir', str(tmp_path / 'out')]
    main([str(path)] + TEXTS + argv)
    lines = [
        line for line in capsys.readouterr().out.splitlines()
        if '" -> ' in line
    ]
    assert len(lines) == len(TEXTS)
    for text, line in zip(TEXTS, lines):
        p = probs[text]
        if p < 0.5:
            assert f'-> 0 px, absent: presence {p:.2f} < 0.50;' in line
        else:
            assert f'px, presence {p:.2f};' in line and 'absent' not in line


@pytest.mark.parametrize('flip_check,gated',
                         [((), False), (('horizontal', 'vertical'), False),
                          ((), True)])
def test_scene_through_onnx_runtime_equals_pytorch(exported_presence, tmp_path,
                                                   flip_check, gated):
    """Sliding windows on a small GeoTIFF scene: ONNX Runtime's windows,
    presence, averaged probability and written mask equal PyTorch's, with
    and without the flip check and the text-filter gate (ONNX Runtime's
    text filter is PyTorch's)."""
    import rasterio
    from rasterio.transform import from_origin

    from rsrefseg_core.scene import ScenePredictor
    from helpers import write_tif
    model, out = exported_presence
    rng = np.random.default_rng(5)
    data = rng.integers(0, 255, (3, 150, 200), np.uint8)
    path = write_tif(tmp_path / 'scene.tif', data, 'EPSG:32633',
                     from_origin(500000, 4100000, 1, 1))
    answers = []
    runtimes = (ReferringPredictor(model), OnnxReferringPredictor(out))
    gate = None
    if gated:
        from rsrefseg_core.scene.text_filter import window_filter_max
        torch_filter, ort_filter = (r.text_filter(TEXTS[0]) for r in runtimes)
        np.testing.assert_allclose(ort_filter[0], torch_filter[0], atol=1e-5)
        np.testing.assert_allclose(ort_filter[1:], torch_filter[1:])
        scene = ScenePredictor(runtimes[0], crop_size=96, progress=False)
        scene.set_scene(path)
        scores = window_filter_max(
            [scene.embeddings.get(i) for i in range(len(scene.grid))],
            *torch_filter)
        scene.close()
        gate = float(np.median(scores))
    for runtime in runtimes:
        scene = ScenePredictor(
            runtime,
            crop_size=96,
            window_batch=3,
            progress=False,
            flip_check=flip_check,
            filter_gate=gate)
        scene.set_scene(path)
        answers.append(
            scene.predict(
                TEXTS[:4],
                out_dir=str(tmp_path / type(runtime).__name__),
                keep_probability=True))
        scene.close()
    windows = 0
    for torch_res, ort_res in zip(*answers):
        np.testing.assert_allclose(
            ort_res.window_presence, torch_res.window_presence, atol=1e-5)
        np.testing.assert_allclose(
            ort_res.probability, torch_res.probability, atol=1e-4)
        with rasterio.open(torch_res.mask_path) as a, \
                rasterio.open(ort_res.mask_path) as b:
            differ = (a.read(1) != b.read(1)).mean()
        assert differ < 1e-3, differ
        np.testing.assert_array_equal(
            np.isnan(ort_res.window_presence),
            np.isnan(torch_res.window_presence))
        windows += (torch_res.window_presence < 0.5).sum()
    # windows judged absent, and present ones, were compared
    assert 0 < windows < sum(len(r.window_presence) for r in answers[0])
    if gated:  # and windows left out by the gate
        assert np.isnan(answers[0][0].window_presence).any()


def test_cli_slide_writes_the_scene_outputs(exported_presence, tmp_path,
                                            capsys, monkeypatch):
    """``--slide``: the scene predictor's outputs on ONNX Runtime, written
    on the file's grid; the kept window embeddings are reopened, not
    encoded again."""
    import rasterio

    from rsrefseg_core.scene import ScenePredictor
    from rsrefseg_deploy.__main__ import main
    from helpers import write_geotiff
    _, out = exported_presence
    path = write_geotiff(tmp_path / 'scene.tif', 150, 200)
    texts = [TEXTS[0], TEXTS[5]]
    emb = str(tmp_path / 'scene.npz')
    argv = [
        path, *texts, '--model-dir', out, '--bands', '3', '2', '1', '--slide',
        '--window', '96', '--embeddings', emb
    ]
    answers = main(argv + ['--out-dir', str(tmp_path / 'a')])
    printed = capsys.readouterr().out
    assert '200 x 150 px, 6 windows of 96 x 96 px (stride 72 x 72), ' \
        '6 encoded in' in printed
    scene = ScenePredictor(
        OnnxReferringPredictor(out), crop_size=96, progress=False)
    scene.set_scene(path, bands=(3, 2, 1))
    want = scene.predict(texts, out_dir=str(tmp_path / 'ref'))
    scene.close()
    with rasterio.open(path) as src:
        transform, crs = src.transform, src.crs
    for answer, ref in zip(answers, want):
        assert answer.result.presence == pytest.approx(ref.presence)
        np.testing.assert_array_equal(answer.result.window_presence,
                                      ref.window_presence)
        assert answer.result.geojson == ref.geojson
        with rasterio.open(answer.files['mask']) as got, \
                rasterio.open(ref.mask_path) as exp:
            assert got.transform == transform and got.crs == crs
            assert (got.height, got.width) == (150, 200)
            np.testing.assert_array_equal(got.read(1), exp.read(1))
        with rasterio.open(answer.files['presence']) as got:
            np.testing.assert_array_equal(got.read(1), ref.presence_grid)
        assert 'presence' in [
            line for line in printed.splitlines()
            if f'"{answer.result.text}" -> ' in line
        ][0]

    def no_encoding(*args):
        raise AssertionError('the scene was encoded again')

    monkeypatch.setattr(OnnxReferringPredictor, 'encode_windows', no_encoding)
    again = main(argv + ['--out-dir', str(tmp_path / 'b')])
    assert f'0 encoded: reopened from {emb}' in capsys.readouterr().out
    for a, b in zip(answers, again):
        with rasterio.open(a.files['mask']) as x, \
                rasterio.open(b.files['mask']) as y:
            np.testing.assert_array_equal(x.read(1), y.read(1))


def test_cli_slide_without_torch_or_openmmlab(exported_presence, tmp_path):
    import subprocess
    import sys

    from test_onnx_predictor import BLOCKED, BLOCKER

    from helpers import write_geotiff
    _, out = exported_presence
    path = write_geotiff(tmp_path / 'scene.tif', 150, 200)
    argv = [
        path, TEXTS[0], '--model-dir', out, '--out-dir',
        str(tmp_path / 'out'), '--bands', '3', '2', '1', '--slide', '--window',
        '96'
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
    names = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert names == [
        f'scene_the_red_circle{s}'
        for s in ('_mask.geojson', '_mask.qml', '_mask.tif', '_overview.png',
                  '_presence.tif')
    ]
