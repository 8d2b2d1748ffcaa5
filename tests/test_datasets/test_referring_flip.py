"""ReferringRandomFlip: the image and the direction words flip together."""
import numpy as np
import pytest

from rsrefseg_mm.datasets import ReferringRandomFlip, flip_referring_text


@pytest.mark.parametrize('text,direction,expected', [
    ('the leftmost red square', 'horizontal', 'the rightmost red square'),
    ('the car on the left of the road', 'horizontal',
     'the car on the right of the road'),
    ('Left tank, RIGHT of the Bridge', 'horizontal',
     'Right tank, LEFT of the Bridge'),
    ('the north-west corner', 'horizontal', 'the north-east corner'),
    ('the northwest building', 'horizontal', 'the northeast building'),
    ('the west harbour and eastern pier', 'horizontal',
     'the east harbour and western pier'),
    ('the plane at the top', 'horizontal', 'the plane at the top'),
    ('the topmost plane above the upper road', 'vertical',
     'the bottommost plane below the lower road'),
    ('the northern tank on the left', 'vertical',
     'the southern tank on the left'),
    ('the northwest building', 'vertical', 'the southwest building'),
    ('the upper left ship', 'diagonal', 'the lower right ship'),
    ('the northwest building', 'diagonal', 'the southeast building'),
    ('leftover bright copyright stop', 'horizontal',
     'leftover bright copyright stop'),
    ('the leftmost red square', None, 'the leftmost red square'),
])
def test_flip_referring_text(text, direction, expected):
    assert flip_referring_text(text, direction) == expected
    if direction is not None:  # flipping twice gives the expression back
        assert flip_referring_text(expected, direction) == text


def test_bad_direction():
    with pytest.raises(ValueError, match='flip direction'):
        flip_referring_text('the left car', 'sideways')


@pytest.mark.parametrize('prob,direction,text', [
    (1., 'horizontal', 'the rightmost object'),
    (1., 'vertical', 'the leftmost object'),
    (0., 'horizontal', 'the leftmost object'),
])
def test_transform_flips_image_mask_and_text(prob, direction, text):
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    mask = np.zeros((4, 6), np.uint8)
    mask[:, 0] = 1  # the leftmost column
    results = dict(
        img=img.copy(),
        gt_seg_map=mask.copy(),
        seg_fields=['gt_seg_map'],
        text='the leftmost object')
    out = ReferringRandomFlip(prob=prob, direction=direction)(results)
    assert out['text'] == text
    assert out['flip'] is (prob == 1.)
    axis = {'horizontal': 1, 'vertical': 0}[direction]
    expected = np.flip(img, axis) if prob else img
    np.testing.assert_array_equal(out['img'], expected)
    np.testing.assert_array_equal(out['gt_seg_map'],
                                  np.flip(mask, axis) if prob else mask)


def test_transform_needs_text():
    with pytest.raises(KeyError, match='text'):
        ReferringRandomFlip(prob=1.)(dict(img=np.zeros((2, 2, 3), np.uint8)))


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
def test_flip_array_flips_as_the_transform(direction):
    """The scene windows' flip check flips pixels as the transform does."""
    from rsrefseg_core.flip import flip_array
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = ReferringRandomFlip(
        prob=1., direction=direction)(
            dict(img=img.copy(), text='x'))
    np.testing.assert_array_equal(flip_array(img, direction), out['img'])
    np.testing.assert_array_equal(
        flip_array(flip_array(img[..., 0], direction), direction), img[..., 0])
    with pytest.raises(ValueError, match='flip direction'):
        flip_array(img, 'sideways')
