"""RSRefSeg's sliding-window inference (test_cfg.mode='slide'): windows at
the input's resolution, probabilities averaged where they overlap, windows
judged absent left out; one window over the image is whole-image
inference."""
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict

from rsrefseg_core.scene.grid import window_boxes
from rsrefseg_mm.models.decode_heads.sam_prompt_head import ABSENT_LOGIT
from helpers import GRES_CONFIG, TINY_CONFIG, perturbed_model

TEXT = 'the red circle'


def build(config=TINY_CONFIG):
    model = perturbed_model(config)
    return model


def metas(h, w, text=TEXT):
    return [dict(text=text, img_shape=(h, w), ori_shape=(h, w))]


def scene(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 255


def test_window_boxes_cover_the_image_like_mmseg():
    boxes = window_boxes(100, 70, (40, 40), (30, 30))
    covered = np.zeros((100, 70), int)
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 == 40 and x2 - x1 == 40
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    assert len(boxes) == 3 * 2  # rows at 0, 30, 60; columns at 0, 30
    # an image smaller than the window is one window of its own size
    assert window_boxes(20, 30, (40, 40), (30, 30)) == [(0, 20, 0, 30)]


@torch.no_grad()
def test_one_window_over_the_image_is_whole_inference():
    model = build()
    inputs = scene(96, 120)
    whole = model.inference(inputs, metas(96, 120)).sigmoid()
    model.test_cfg = ConfigDict(
        mode='slide', crop_size=(96, 120), stride=(96, 120))
    slide = model.inference(inputs, metas(96, 120)).sigmoid()
    assert slide.shape == whole.shape == (1, 1, 96, 120)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=0)


@torch.no_grad()
def test_overlapping_windows_average_probabilities():
    model = build()
    inputs = scene(64, 160, seed=1)
    crop, stride = (64, 96), (64, 32)
    model.test_cfg = ConfigDict(
        mode='slide', crop_size=crop, stride=stride, window_batch=2)
    out = model.inference(inputs, metas(64, 160)).sigmoid()[0, 0]
    # independent reference: each window through the whole-image path
    whole = build()
    total = torch.zeros(64, 160)
    count = torch.zeros(64, 160)
    for y1, y2, x1, x2 in window_boxes(64, 160, crop, stride):
        crop_in = inputs[:, :, y1:y2, x1:x2]
        prob = whole.inference(crop_in, metas(y2 - y1, x2 - x1)).sigmoid()[0,
                                                                           0]
        total[y1:y2, x1:x2] += prob
        count[y1:y2, x1:x2] += 1
    assert count.max() == 3 and count.min() == 1
    torch.testing.assert_close(out, total / count, atol=1e-5, rtol=0)


@torch.no_grad()
def test_absent_windows_contribute_nothing():
    model = build(GRES_CONFIG).eval()
    inputs = scene(64, 128, seed=2)
    model.test_cfg = ConfigDict(
        mode='slide', crop_size=(64, 64), stride=(64, 64))
    head = model.decode_head.mask_decoder.iou_prediction_head.layers[-1]
    calls = []

    def presence_by_window(module, args, output):
        # window 0 absent, window 1 present
        calls.append(output.shape[0])
        out = output.clone()
        out[:, 0] = torch.tensor([-50.0, 50.0])[:output.shape[0]]
        return out

    hook = head.register_forward_hook(presence_by_window)
    try:
        logits = model.inference(inputs, metas(64, 128))
    finally:
        hook.remove()
    assert calls == [2]
    assert (logits[..., :64] == ABSENT_LOGIT).all()
    right = logits[..., 64:].sigmoid()
    # the present window's own probabilities, not halved by the other
    model.test_cfg = ConfigDict(mode='whole')
    hook = head.register_forward_hook(lambda m, a, o: torch.full_like(o, 50.0))
    try:
        alone = model.inference(inputs[..., 64:], metas(64, 64)).sigmoid()
    finally:
        hook.remove()
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)


def test_slide_predict_through_the_runner_flow():
    """mode='predict' with slide: masks at the original size."""
    model = build()
    model.cfg.model.test_cfg = dict(
        mode='slide', crop_size=(64, 64), stride=(48, 48))
    model.test_cfg = ConfigDict(model.cfg.model.test_cfg)
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=metas(100, 90)[0])
    with torch.no_grad():
        out = model(scene(100, 90), [sample], mode='predict')
    assert out[0].pred_sem_seg.data.shape == (1, 100, 90)
    assert set(out[0].pred_sem_seg.data.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize('texts', [['a', 'b', 'a', 'a'], ['x'] * 3])
@torch.no_grad()
def test_each_distinct_expression_is_encoded_once(texts):
    model = build()
    seen = []
    original = model.backbone.encode_text

    def counting(batch, **kwargs):
        seen.append(list(batch))
        return original(batch, **kwargs)

    model.backbone.encode_text = counting
    emb = model.encode_image(scene(64, 64))
    logits, _ = model.decode(emb, texts)
    assert seen == [list(dict.fromkeys(texts))]
    # same logits as encoding every copy
    model.backbone.encode_text = original
    for i, t in enumerate(texts):
        one, _ = model.decode(emb, [t])
        torch.testing.assert_close(logits[i:i + 1], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize('test_cfg, message', [
    (dict(mode='tiles'), "'whole' or 'slide'"),
    (dict(mode='slide', stride=(8, 8)), 'crop_size'),
    (dict(mode='slide', crop_size=(16, 16), stride=(32, 16)), 'leaves gaps'),
    (dict(mode='slide', crop_size=(16, 16), stride=(8, 8),
          window_batch=0), 'window_batch'),
])
def test_bad_slide_settings_are_refused_by_name(test_cfg, message):
    from rsrefseg_mm.models.segmentors.rsrefseg import check_test_cfg
    with pytest.raises(ValueError, match=message):
        check_test_cfg(ConfigDict(test_cfg))
