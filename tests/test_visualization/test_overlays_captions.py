"""Readable overlays (fill + contour, object colour kept), labelled panels
with IoU, Unicode captions."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from rsrefseg_core.visualization import captions
from rsrefseg_core.visualization.overlays import PRED_COLOR
from rsrefseg_mm.visualization import (ReferringVisualizer, add_caption,
                                       draw_mask_overlay, mask_iou, text_band)

GREEN = np.array([40, 190, 60])  # the synthetic scenes' green


def green_square_scene():
    img = np.full((128, 128, 3), 100, np.uint8)
    img[40:80, 40:80] = GREEN
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 40:80] = 1
    return img, mask


def test_overlay_keeps_the_object_colour_and_draws_a_contour():
    img, mask = green_square_scene()
    out = draw_mask_overlay(img, mask)
    inside = out[60, 60].astype(int)
    # still green: green is the strongest channel, and close to the original
    assert inside[1] > inside[0] + 40 and inside[1] > inside[2] + 40
    assert np.abs(inside - GREEN).max() < 70
    # crisp contour on the boundary, dark outline beside it
    assert tuple(out[40, 60]) == PRED_COLOR
    assert (out[38, 60] == 0).all() or (out[41, 60] == 0).all()
    # far from the mask nothing changes
    np.testing.assert_array_equal(out[5:30, 5:30], img[5:30, 5:30])
    np.testing.assert_array_equal(img[60, 60], GREEN)  # input untouched


def test_mask_iou_ignores_ignore_label():
    gt = np.array([[1, 1, 0, 255]], np.uint8)
    pred = np.array([[1, 0, 1, 1]], np.uint8)
    assert mask_iou(pred, gt) == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_visualizer_panels_are_labelled_with_iou(monkeypatch):
    img, mask = green_square_scene()
    pred = mask.copy()
    pred[40:80, 60:80] = 0  # half of the target -> IoU 0.5
    sample = SegDataSample(metainfo=dict(text='the green square'))
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None])
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
    labels = []
    real = captions.label_panel

    def spy(image, label, size=None):
        labels.append(label)
        return real(image, label, size)

    from rsrefseg_mm.visualization import referring_visualizer
    monkeypatch.setattr(referring_visualizer, 'label_panel', spy)
    vis = ReferringVisualizer(name='test_panels', save_dir=None)
    drawn = vis.draw_referring(img, sample)
    assert labels == ['ground truth', 'prediction \u00b7 IoU 0.50']
    # 128 px panels enlarged 2x, a 4 px gap, caption and labels above
    assert drawn.shape[1] == 2 * 256 + 4 and drawn.shape[0] > 256 + 2 * 13


def render(text, width=300):
    return text_band(text, width, size=20)


@pytest.mark.parametrize('text', [
    'l\u2019\u00e9glise', '\u0436\u0451\u043b'
    '\u0442\u044b\u0439', '\u03bb\u03af\u03bc'
    '\u03bd\u03b7', 'Stra\u00dfe'
])
def test_non_ascii_captions_are_drawn_with_a_covering_font(text):
    fonts = captions.covered(text)
    assert all(path is not None for path in fonts.values()), fonts
    # every glyph differs from OpenCV's substitute '?'
    for ch in set(text) - set('\u2019 '):
        assert not np.array_equal(render(ch), render('?')), ch


def test_uncovered_characters_are_reported(monkeypatch):
    monkeypatch.setattr(captions, 'font_paths',
                        lambda: [captions.dejavu_sans()])
    monkeypatch.setattr(captions, '_fontconfig_font', lambda cp: None)
    monkeypatch.setattr(captions, '_warned', set())
    messages = []
    monkeypatch.setattr(captions, 'warn', messages.append)
    band = render('\u50a8\u7f50')  # "storage tank", not in DejaVu Sans
    assert band.shape[0] > 0
    assert len(messages) == 1 and 'U+50A8' in messages[0]
    assert 'fonts-noto-cjk' in messages[0] and captions.FONT_ENV in \
        messages[0]
    render('\u50a8')  # reported once
    assert len(messages) == 1


def test_captions_wrap_and_scale_with_the_image():
    long = 'the small white storage tank to the left of the curved road ' * 2
    lines = captions.wrap_text(long, 13, 190)
    assert len(lines) >= 4 and len(captions.wrap_text(long, 13, 1590)) == 1
    assert ' '.join(lines) == long.strip()  # nothing lost
    for line in lines:
        assert captions._text_width(captions.text_runs(line), 13) <= 190
    narrow = add_caption(np.zeros((10, 200, 3), np.uint8), long)
    assert narrow.shape[0] - 10 >= len(lines) * 13  # every line drawn
    assert captions.caption_size(256) >= 13
    assert captions.caption_size(1600) > captions.caption_size(400)
    # a script without spaces is broken between characters
    assert len(captions.wrap_text('\u00e9' * 200, 13, 100)) > 3
