"""The text tower in its own graph (``text_encoder.onnx``): ONNX Runtime runs
it once per expression, on a scene of many windows and across images, with
the answers of PyTorch (tiny CLIP config and a tiny-size paper SigLIP
config); a graph traced at a fixed expression count is padded to it."""
import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from rsrefseg_core.scene import ScenePredictor
from rsrefseg_deploy import OnnxReferringPredictor
from rsrefseg_mm.apis import ReferringPredictor
from helpers import TINY_CONFIG, load_script, perturbed_model, write_tif

TEXTS = ['the red circle', 'the blue square', 'the green triangle']


class CountingSession:
    """An ONNX Runtime session that counts its runs and the expressions
    they took (the first axis of ``row_input``)."""

    def __init__(self, session, row_input: str) -> None:
        self.session = session
        self.row_input = row_input
        self.runs = 0
        self.rows = 0

    def run(self, output_names, feeds):
        self.runs += 1
        self.rows += len(feeds[self.row_input])
        return self.session.run(output_names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def counted(predictor: OnnxReferringPredictor) -> OnnxReferringPredictor:
    """``predictor`` with its text encoder and decoder sessions counted."""
    predictor.text_encoder = CountingSession(predictor.text_encoder,
                                             'token_ids')
    predictor.decoder = CountingSession(predictor.decoder, 'text_global')
    return predictor


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A 150 x 200 GeoTIFF: 6 windows of 96 x 96 px."""
    data = np.random.default_rng(3).integers(0, 255, (3, 150, 200), np.uint8)
    return write_tif(
        tmp_path_factory.mktemp('scene') / 'scene.tif', data, 'EPSG:32633',
        from_origin(500000, 4100000, 1, 1))


def test_text_graph_runs_once_per_expression_on_a_scene(
        exported, scene, tmp_path):
    """Sliding windows: the text graph once per distinct expression (not
    per window, nor per window batch, nor again on a second scene), the
    decoder once per window and expression; the answers equal PyTorch's."""
    model, model_dir, _ = exported
    ours = counted(OnnxReferringPredictor(model_dir))
    answers = []
    for runtime in (ReferringPredictor(model), ours):
        slide = ScenePredictor(
            runtime, crop_size=96, window_batch=4, progress=False)
        slide.set_scene(scene)
        assert len(slide.grid) == 6
        answers.append(
            slide.predict(
                TEXTS[:2] + TEXTS[:1],
                out_dir=str(tmp_path / type(runtime).__name__),
                keep_probability=True))
        slide.close()
    assert ours.text_encoder.runs == 2  # the repeated expression: cached
    assert ours.decoder.runs == 3 * 6  # one image per decoder call
    for torch_res, ort_res in zip(*answers):
        assert ort_res.text == torch_res.text
        np.testing.assert_allclose(
            ort_res.probability, torch_res.probability, atol=1e-4)
    # the same expressions on another scene: decoder only
    slide = ScenePredictor(ours, crop_size=96, progress=False)
    slide.set_scene(scene, bands=(3, 2, 1))
    again = slide.predict(
        TEXTS[1], out_dir=str(tmp_path / 'again'), keep_probability=True)
    slide.close()
    assert ours.text_encoder.runs == 2 and ours.decoder.runs == 4 * 6
    assert again.probability.shape == answers[1][1].probability.shape


def test_text_graph_outputs_kept_across_images(exported):
    """predict() on two images: each expression's text graph once, the
    answers those of PyTorch and of a predictor that encodes them
    afresh."""
    model, model_dir, _ = exported
    ours = counted(OnnxReferringPredictor(model_dir, max_batch=2))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (80, 100, 3), np.uint8) for _ in range(2)]
    theirs = ReferringPredictor(model)
    for k, image in enumerate(images):
        ours.set_image(image)
        theirs.set_image(image)
        got = ours.predict(TEXTS[k:] + TEXTS[:1])
        want = theirs.predict(TEXTS[k:] + TEXTS[:1])
        for g, w in zip(got, want):
            prob = w.seg_logits.data[0].numpy()
            assert np.abs(g.probability - prob).max() <= 1e-3, g.text
    # image 0: 3 new expressions (batches of 2 and 1); image 1: none new
    assert ours.text_encoder.runs == 2 and ours.text_encoder.rows == 3
    assert list(ours.text_cache) == TEXTS[1:] + TEXTS[:1]
    fresh = OnnxReferringPredictor(model_dir)
    fresh.set_image(images[1])
    for g, f in zip(got, fresh.predict(TEXTS[1:] + TEXTS[:1])):
        # (the text graph ran in other batches there: float rounding)
        np.testing.assert_allclose(g.probability, f.probability, atol=1e-6)


def test_fixed_expression_count_is_padded(tmp_path):
    """A folder traced at 2 expressions per call: the text graph takes 2
    rows (the missing expressions padded), the decoder 2 copies of one
    expression per window; the answers equal the dynamic folder's."""
    model = perturbed_model(TINY_CONFIG)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    tool = load_script('tools/deployment/export_onnx.py')
    dirs = {}
    for name, extra in (('fixed', ['--num-expressions', '2']),
                        ('dynamic', ['--dynamic-expressions'])):
        dirs[name] = str(tmp_path / name)
        tool.main([TINY_CONFIG, str(ckpt), '--out-dir', dirs[name]] + extra)
    fixed = counted(OnnxReferringPredictor(dirs['fixed']))
    dynamic = OnnxReferringPredictor(dirs['dynamic'])
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    got = {}
    for name, predictor in (('fixed', fixed), ('dynamic', dynamic)):
        predictor.set_image(image)
        got[name] = predictor.predict(TEXTS)
    assert fixed.text_encoder.runs == 2 and fixed.text_encoder.rows == 4
    for f, d in zip(got['fixed'], got['dynamic']):
        np.testing.assert_allclose(f.probability, d.probability, atol=1e-6)
    # one expression on encoded windows: no new text run, 2 rows decoded
    encodings = fixed.encode_windows([got['fixed'][0].image] * 2)
    probs, _ = fixed.decode_windows(encodings, (64, 64), TEXTS[2])
    assert fixed.text_encoder.runs == 2
    assert fixed.decoder.rows == 2 * 2 + 2 * 2
    np.testing.assert_allclose(
        probs[1], got['fixed'][2].probability, atol=1e-6)
