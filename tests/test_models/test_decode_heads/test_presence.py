"""SAMPromptHead's presence output: trained by its own loss, empties the
mask of an expression judged absent, and changes nothing when off."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.decode_heads.sam_prompt_head import ABSENT_LOGIT
from helpers import TINY_SAM, referring_samples


def build(presence_cfg=None):
    torch.manual_seed(0)
    init_default_scope('mmseg')
    return MODELS.build(
        dict(
            type='SAMPromptHead',
            sam_arch=TINY_SAM,
            encoder_tuning=dict(mode='full'),
            presence_cfg=presence_cfg))


def inputs(B=2):
    torch.manual_seed(1)
    return dict(
        images=torch.rand(B, 3, 96, 96) * 255,
        sparse_prompts=torch.randn(B, 4, 32),
        dense_prompts=torch.randn(B, 1, 32, 32))


def samples(present):
    out = referring_samples(len(present), 96, box=(20, 50, 20, 50))
    for ds, p in zip(out, present):
        if not p:  # a no-target expression: nothing to segment
            ds.gt_sem_seg.data[ds.gt_sem_seg.data == 1] = 0
    return out


def test_off_by_default_and_same_masks():
    plain, gated = build(), build(dict(threshold=0.5))
    gated.load_state_dict(plain.state_dict())
    x = inputs()
    plain.train(), gated.train()
    torch.testing.assert_close(plain(dict(x)), gated(dict(x)))
    losses = plain.loss(dict(x), samples([True, False]), {})
    assert 'loss_presence' not in losses
    plain.eval()
    with torch.no_grad():
        y = dict(x)
        plain(y)
    assert 'presence' not in y


def test_presence_loss_matches_bce_and_trains():
    head = build(dict(loss_weight=2.0))
    x = inputs()
    masks, logits = head.forward_with_presence(dict(x))
    target = torch.tensor([1.0, 0.0])
    losses = head.loss(dict(x), samples([True, False]), {})
    want = 2.0 * torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target)
    torch.testing.assert_close(losses['loss_presence'], want)
    assert 0 <= float(losses['acc_presence']) <= 100
    # a few steps on the presence loss alone separate the two expressions
    opt = torch.optim.Adam(head.mask_decoder.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        head.loss(dict(x), samples([True, False]), {})['loss_presence']\
            .backward()
        opt.step()
    _, logits = head.forward_with_presence(dict(x))
    assert logits[0] > 0 > logits[1]


@pytest.mark.parametrize('threshold', [0.3, 0.7])
def test_absent_expressions_get_empty_masks(threshold):
    head = build(dict(threshold=threshold)).eval()
    x = inputs(4)
    with torch.no_grad():
        raw, logits = head.forward_with_presence(dict(x))
        y = dict(x)
        gated = head(y)
    prob = logits.sigmoid()
    torch.testing.assert_close(y['presence'], prob)
    for i in range(4):
        if prob[i] < threshold:
            assert (gated[i] == ABSENT_LOGIT).all()
            assert (gated[i].sigmoid() == 0).all()
        else:
            torch.testing.assert_close(gated[i], raw[i])


def test_bad_presence_cfg():
    with pytest.raises(TypeError, match='unknown keys'):
        build(dict(weight=1.0))
    with pytest.raises(ValueError, match='threshold'):
        build(dict(threshold=1.0))
    with pytest.raises(ValueError, match='threshold <= scene_threshold'):
        build(dict(threshold=0.5, scene_threshold=0.4))


def test_scene_threshold_defaults_to_threshold():
    assert build(dict(threshold=0.3)).presence_cfg['scene_threshold'] == 0.3
    assert build(dict(scene_threshold=0.9)).presence_cfg == dict(
        loss_weight=1.0, threshold=0.5, scene_threshold=0.9)
