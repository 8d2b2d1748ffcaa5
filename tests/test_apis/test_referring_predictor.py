"""ReferringPredictor: encode an image once, answer many expressions, with
the results of the one-pass path (the segmentor's own ``predict``)."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate

from rsrefseg_mm.apis import (ReferringPredictor, build_test_pipeline,
                              inference_referring, load_referring_image)
from rsrefseg_mm.apis.pipeline import prepare_inputs
from helpers import TINY_CONFIG, perturbed_model, write_geotiff

TEXTS = [
    'the red circle', 'a blue square at the top', 'the green triangle',
    'the object on the left', 'the smallest thing'
]


@pytest.fixture(scope='module')
def model():
    model = perturbed_model(TINY_CONFIG)
    return model


@pytest.fixture(scope='module')
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)  # non-square


@torch.no_grad()
def one_pass(model, img, text):
    """One (image, expression) pair through ``model.predict``: towers,
    prompter and SAM in one forward, as the test loop runs it."""
    raster = load_referring_image(img)
    data = model.data_preprocessor(
        pseudo_collate(
            [prepare_inputs(raster, text, build_test_pipeline(model.cfg))]),
        False)
    return model.predict(data['inputs'], data['data_samples'])[0]


@pytest.mark.parametrize('max_batch', [8, 2])
def test_predict_equals_one_pass(model, image, max_batch):
    predictor = ReferringPredictor(model, max_batch=max_batch)
    predictor.set_image(image)
    results = predictor.predict(TEXTS)
    assert len(results) == len(TEXTS)
    worst = 0.
    for text, got in zip(TEXTS, results):
        want = one_pass(model, image, text)
        assert got.text == text
        assert got.pred_sem_seg.data.shape == (1, 96, 150)
        assert got.global_map.data.shape == (1, 96, 150)
        worst = max(
            worst,
            float((got.seg_logits.data - want.seg_logits.data).abs().max()))
        assert torch.equal(got.pred_sem_seg.data, want.pred_sem_seg.data)
    assert worst <= 1e-5
    # the masks differ between expressions: the text reaches the decoder
    masks = {tuple(r.seg_logits.data.flatten()[:64].tolist()) for r in results}
    assert len(masks) == len(TEXTS)


def test_inference_referring_groups_images(model, image, monkeypatch):
    calls = []
    original = ReferringPredictor.set_image

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ReferringPredictor, 'set_image', counting)
    other = image[::-1].copy()
    imgs = [image, other, image, image]
    texts = TEXTS[:4]
    results = inference_referring(model, imgs, texts)
    assert len(calls) == 2  # two distinct images, each encoded once
    for img, text, got in zip(imgs, texts, results):
        want = one_pass(model, img, text)
        assert got.text == text
        assert torch.allclose(
            got.seg_logits.data, want.seg_logits.data, atol=1e-5)


def test_single_text_and_errors(model, image):
    predictor = ReferringPredictor(model)
    with pytest.raises(RuntimeError, match='set_image'):
        predictor.predict('the red circle')
    predictor.set_image(image)
    assert predictor.is_image_set
    single = predictor.predict('the red circle')
    assert single.text == 'the red circle'
    with pytest.raises(ValueError, match='expression 1'):
        predictor.predict(['the red circle', '   '])
    with pytest.raises(ValueError, match='expression 0: .*punctuation'):
        predictor.predict('...')  # empty for SigLIP's tokenizer
    predictor.reset_image()
    assert not predictor.is_image_set
    with pytest.raises(ValueError, match='max_batch'):
        ReferringPredictor(model, max_batch=0)
    with pytest.raises(ValueError, match='cache_size'):
        ReferringPredictor(model, cache_size=-1)
    with pytest.raises(ValueError, match='max_read_size'):
        ReferringPredictor(model, max_read_size=0)


def test_cache_of_encoded_images(model, image, tmp_path, monkeypatch):
    encodings = []
    encode = model.encode_image
    monkeypatch.setattr(model, 'encode_image',
                        lambda x: encodings.append(1) or encode(x))
    other = image[:, ::-1].copy()
    predictor = ReferringPredictor(model, cache_size=1)
    predictor.set_image(image)
    first = predictor.predict('the red circle')
    predictor.set_image(image.copy())  # same content, another array
    assert predictor.from_cache and len(encodings) == 1
    again = predictor.predict('the red circle')
    assert torch.equal(first.seg_logits.data, again.seg_logits.data)
    predictor.set_image(image, bands=(3, 2, 1))  # other reading arguments
    assert not predictor.from_cache and len(encodings) == 2
    predictor.set_image(other)  # evicts the least recently used
    predictor.set_image(image)
    assert not predictor.from_cache and len(encodings) == 4
    assert len(predictor.cache) == 1


def test_cache_key_includes_every_reading_argument(model, tmp_path,
                                                   monkeypatch):
    encodings = []
    encode = model.encode_image
    monkeypatch.setattr(model, 'encode_image',
                        lambda x: encodings.append(1) or encode(x))
    tif = write_geotiff(tmp_path / 'scene.tif')
    predictor = ReferringPredictor(model, cache_size=8, max_read_size=None)
    full = predictor.set_image(tif, bands=(3, 2, 1))
    assert full.img.shape[:2] == (90, 120) and len(encodings) == 1
    predictor.set_image(tif, bands=(3, 2, 1))
    assert predictor.from_cache and len(encodings) == 1
    predictor.set_image(tif, bands=(1, 2, 3))  # other bands
    assert not predictor.from_cache and len(encodings) == 2
    predictor.set_image(tif, bands=(3, 2, 1), stretch=(1, 99))
    assert not predictor.from_cache and len(encodings) == 3
    # the same file read coarser is another image (was a cache hit)
    predictor.max_read_size = 60
    small = predictor.set_image(tif, bands=(3, 2, 1))
    assert not predictor.from_cache and len(encodings) == 4
    assert small.img.shape[:2] == (45, 60)
    assert predictor.predict('the red circle').pred_sem_seg.shape == (45, 60)


def test_nodata_pixels_are_background(model, tmp_path):
    tif = write_geotiff(tmp_path / 'scene.tif')
    predictor = ReferringPredictor(model, max_read_size=None)
    image = predictor.set_image(tif, bands=(3, 2, 1))
    assert image.nodata_mask[:, :7].all() and not image.nodata_mask[:,
                                                                    7:].any()
    for got in predictor.predict(TEXTS[:2]):
        prob = got.seg_logits.data[0]
        assert (prob[:, :7] == 0).all() and (prob[:, 7:] > 0).all()
        assert (got.pred_sem_seg.data[0][:, :7] == 0).all()
        assert (got.global_map.data[0][:, :7] == 0).all()
        assert (got.global_map.data[0][:, 7:] > 0).any()
