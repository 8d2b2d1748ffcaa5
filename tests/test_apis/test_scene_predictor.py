"""Scenes through the PyTorch predictor: one window covering the image
gives the whole-image answer, several windows give the average of each
window's own answer (windows judged absent left out), and the expression's
text tower runs once per scene."""
import numpy as np
import pytest
import torch

from rsrefseg_core.scene import SceneGrid, ScenePredictor
from rsrefseg_core.scene.text_filter import window_filter_max
from rsrefseg_mm.apis import ReferringPredictor
from helpers import (GRES_CONFIG, centre_presence, perturbed_model,
                     presence_layer, write_geotiff)

TEXTS = ['the red circle', 'the blue square', 'the white cross']


@pytest.fixture(scope='module')
def model():
    model = perturbed_model(GRES_CONFIG)
    with torch.no_grad():  # presence spread around the threshold
        presence_layer(model).weight[0].mul_(50)
    # a scene's windows at the single-image threshold: each window counts
    # as the image would
    cfg = model.decode_head.presence_cfg
    cfg['scene_threshold'] = cfg['threshold']
    return model


def test_one_window_covering_the_image_equals_whole_image(model, tmp_path):
    path = write_geotiff(tmp_path / 'scene.tif', 90, 120)
    whole = ReferringPredictor(model, max_read_size=None)
    whole.set_image(path, bands=(3, 2, 1))
    centre_presence(model,
                    [r.metainfo['presence'] for r in whole.predict(TEXTS)], 1)
    expected = whole.predict(TEXTS)
    assert sum(r.metainfo['presence'] < 0.5 for r in expected) == 1
    scene = ScenePredictor(
        ReferringPredictor(model), crop_size=(90, 120), progress=False)
    scene.set_scene(path, bands=(3, 2, 1))
    assert len(scene.grid) == 1
    results = scene.predict(TEXTS, keep_probability=True)
    threshold = model.decode_head.presence_cfg['threshold']
    for ref, res in zip(expected, results):
        assert res.presence == pytest.approx(
            ref.metainfo['presence'], abs=2e-5)
        prob = ref.seg_logits.data[0].numpy()
        if ref.metainfo['presence'] < threshold:  # empty in both
            assert not res.found and prob.max() < 1e-3
        np.testing.assert_allclose(res.probability, prob, atol=1e-5)
        np.testing.assert_array_equal(res.mask,
                                      ref.pred_sem_seg.data[0].numpy())
    scene.close()


def window_answers(model, image, boxes, text):
    """Each window on its own, as a whole image."""
    single = ReferringPredictor(model, max_read_size=None)
    answers = []
    for y1, y2, x1, x2 in boxes:
        single.set_image(np.ascontiguousarray(image[y1:y2, x1:x2]))
        answers.append(single.predict(text))
    return answers


#: The grid of the multi-window tests: 64 px windows, strides 32 / 43.
GRID = dict(crop_size=64, stride=(32, 43), window_batch=3, progress=False)


def mosaic(shape, boxes, probs):
    """The expected scene probability: each window's (h, w) probability
    averaged where windows overlap (None: the window counts nothing)."""
    total = np.zeros(shape)
    count = np.zeros(shape)
    for (y1, y2, x1, x2), prob in zip(boxes, probs):
        if prob is not None:
            total[y1:y2, x1:x2] += prob
            count[y1:y2, x1:x2] += 1
    return total / np.maximum(count, 1)


def test_windows_average_their_own_answers(model):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (96, 150, 3), np.uint8)
    boxes = SceneGrid.build(96, 150, 64, (32, 43)).boxes
    centre_presence(model, [
        r.metainfo['presence']
        for r in window_answers(model, image, boxes, TEXTS[0])
    ],
                    len(boxes) // 2)
    answers = window_answers(model, image, boxes, TEXTS[0])
    presences = [r.metainfo['presence'] for r in answers]
    # the test means something: windows on both sides of the threshold
    assert min(presences) < 0.5 < max(presences), presences
    expected = mosaic(image.shape[:2], boxes, [
        r.seg_logits.data[0].numpy() if r.metainfo['presence'] >= 0.5 else None
        for r in answers
    ])

    scene = ScenePredictor(ReferringPredictor(model), **GRID)
    scene.set_scene(image)
    assert scene.grid.boxes == boxes
    calls = []
    encode_text = model.encode_text
    model.encode_text = lambda *a: calls.append(a[0]) or encode_text(*a)
    try:
        got = scene.predict(TEXTS[0], keep_probability=True)
        again = scene.predict(TEXTS[0], keep_probability=True)
    finally:
        del model.encode_text
    assert calls == [[TEXTS[0]]]  # once for the scene, then kept
    np.testing.assert_array_equal(got.probability, again.probability)
    np.testing.assert_allclose(got.window_presence, presences, atol=1e-5)
    np.testing.assert_allclose(got.probability, expected, atol=1e-5)
    # the runtime leaves absent windows unresized: None, present ones equal
    probs, pres = scene.runtime.decode_windows(
        [scene.embeddings.get(i) for i in range(len(boxes))], (64, 64),
        TEXTS[0])
    for prob, p, res in zip(probs, pres, answers):
        if p < 0.5:
            assert prob is None
        else:
            np.testing.assert_allclose(
                prob, res.seg_logits.data[0].numpy(), atol=1e-5)
    scene.close()


def test_a_window_nodata_stays_its_own(model, tmp_path):
    """The first window's nodata columns are not applied to the windows
    decoded after it: each window's probability is its own answer."""
    tif = write_geotiff(tmp_path / 'scene.tif', 96, 150)  # 7 nodata columns
    scene = ScenePredictor(
        ReferringPredictor(model),
        crop_size=96,
        stride=(96, 54),
        progress=False)
    scene.set_scene(tif, bands=(3, 2, 1))
    boxes = scene.grid.boxes
    assert [b[2] for b in boxes] == [0, 54]  # nodata in the first only
    cfg = model.decode_head.presence_cfg
    threshold, cfg['threshold'] = cfg['threshold'], 0.0  # every window
    try:
        probs, _ = scene.runtime.decode_windows(
            [scene.embeddings.get(i) for i in range(len(boxes))], (96, 96),
            TEXTS[0])
        single = ReferringPredictor(model)
        single.set_image(tif, bands=(3, 2, 1))
        whole = single.image.img
        for prob, (y1, y2, x1, x2) in zip(probs, boxes):
            single.set_image(np.ascontiguousarray(whole[y1:y2, x1:x2]))
            want = single.predict(TEXTS[0]).seg_logits.data[0].numpy()
            np.testing.assert_allclose(prob, want, atol=1e-5)
        assert (probs[1][:, :7] > 0).all()
    finally:
        cfg['threshold'] = threshold
        scene.close()


def test_flip_check_keeps_the_windows_every_view_passes(model):
    """``flip_check``: a window that passes is asked again flipped, with
    the expression's direction words swapped; it counts where every view
    passes, its presence the least of the views' and its probability their
    mean (flipped back). Windows below the threshold are not re-encoded."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (96, 150, 3), np.uint8)
    boxes = SceneGrid.build(96, 150, 64, (32, 43)).boxes
    text, flipped_text = 'the red circle on the left', \
        'the red circle on the right'
    mirrored = [(y1, y2, 150 - x2, 150 - x1) for y1, y2, x1, x2 in boxes]

    def views():
        first = window_answers(model, image, boxes, text)
        flipped = window_answers(model, image[:, ::-1], mirrored, flipped_text)
        return first, flipped, *(
            np.array([r.metainfo['presence'] for r in rs])
            for rs in (first, flipped))

    # threshold (logit 0) just above the flipped view of the window whose
    # views differ most, below both views of another window
    p0, p1 = views()[2:]
    l0, l1 = np.log(p0 / (1 - p0)), np.log(p1 / (1 - p1))
    j = int(np.argmax(l0 - l1))
    both = np.delete(np.minimum(l0, l1), j).max()
    with torch.no_grad():
        presence_layer(model).bias[0] -= (l1[j] + min(l0[j], both)) / 2
    first, flipped, p0, p1 = views()
    kept = (p0 >= 0.5) & (p1 >= 0.5)
    # the test means something: the check drops windows and keeps others
    assert kept.any() and ((p0 >= 0.5) & ~kept).any(), (p0, p1)
    expected = mosaic(
        image.shape[:2], boxes,
        [(a.seg_logits.data[0].numpy() +
          b.seg_logits.data[0].numpy()[:, ::-1]) / 2 if keep else None
         for a, b, keep in zip(first, flipped, kept)])

    runtime = ReferringPredictor(model)
    scene = ScenePredictor(runtime, flip_check=('horizontal', ), **GRID)
    scene.set_scene(image)
    encoded = []
    encode = runtime.encode_windows
    runtime.encode_windows = lambda w: encoded.append(len(w)) or encode(w)
    got = scene.predict(text, keep_probability=True)
    assert sum(encoded) == (p0 >= 0.5).sum()  # only the windows that pass
    np.testing.assert_allclose(
        got.window_presence,
        np.where(p0 >= 0.5, np.minimum(p0, p1), p0),
        atol=1e-5)
    np.testing.assert_allclose(got.probability, expected, atol=1e-5)
    scene.close()


@pytest.mark.parametrize('flips, match', [
    (('sideways', ), 'one of'),
    (('vertical', 'vertical'), 'twice'),
])
def test_bad_flip_check_is_refused(model, flips, match):
    with pytest.raises(ValueError, match=match):
        ScenePredictor(ReferringPredictor(model), flip_check=flips)


def test_filter_gate_decodes_the_windows_the_text_filter_passes(model):
    """``filter_gate``: the global text filter's largest logit per window,
    computed in NumPy from the stored patch features, is the prompter's;
    windows below the gate are not decoded (no presence, nothing painted),
    the others answer as without the gate."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, (96, 150, 3), np.uint8)
    runtime = ReferringPredictor(model)
    maxima = []
    neck_forward = model.neck.forward

    def record(feats):
        out = neck_forward(feats)
        maxima.extend(out['global_logits'].flatten(1).max(1).values.tolist())
        return out

    def scene_predictor(gate):
        scene = ScenePredictor(runtime, filter_gate=gate, **GRID)
        scene.set_scene(image)
        return scene

    ungated = scene_predictor(None)
    model.neck.forward = record
    try:
        full = ungated.predict(TEXTS[1], keep_probability=True)
    finally:
        del model.neck.forward
    encodings = [
        ungated.embeddings.get(i) for i in range(len(ungated.grid.boxes))
    ]
    scores = window_filter_max(encodings, *runtime.text_filter(TEXTS[1]))
    np.testing.assert_allclose(scores, maxima, atol=1e-4)
    gate = float(np.median(scores))
    passed = scores >= gate
    # the test means something: windows gated, windows decoded and found
    assert (passed & (full.window_presence >= 0.5)).any() and \
        not passed.all()

    expected = mosaic(image.shape[:2], ungated.grid.boxes, [
        runtime.decode_windows([e], (64, 64), TEXTS[1])[0][0]
        if keep and p >= 0.5 else None
        for e, keep, p in zip(encodings, passed, full.window_presence)
    ])
    gated = scene_predictor(gate)
    decoded = []
    decode = runtime.decode_windows
    runtime.decode_windows = lambda e, *a: decoded.append(len(e)) or decode(
        e, *a)
    got = gated.predict(TEXTS[1], keep_probability=True)
    assert sum(decoded) == passed.sum()
    np.testing.assert_array_equal(np.isnan(got.window_presence), ~passed)
    np.testing.assert_allclose(
        got.window_presence[passed], full.window_presence[passed], atol=1e-5)
    np.testing.assert_allclose(got.probability, expected, atol=1e-5)
    with pytest.raises(ValueError, match='finite'):
        ScenePredictor(runtime, filter_gate=float('nan'))
    ungated.close()
    gated.close()
