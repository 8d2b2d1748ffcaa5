"""Test-time augmentation: flips that respect the words, multi-scale views
merged at the original size, ``--tta`` for every config."""
import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import BaseSegmentor, SegTTAModel
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets.synthetic_scenes import (COLORS, POSITIONS,
                                                   render_scene,
                                                   resolve_expression)
from rsrefseg_mm.models.segmentors import ReferringTTAModel
from helpers import REPO, fake_runner, load_script, tiny_rsrefseg

TEXT = 'the leftmost red object'


@pytest.fixture(autouse=True)
def _mmseg_scope():
    init_default_scope('mmseg')


@MODELS.register_module(force=True)
class _ColourOracle(BaseSegmentor):
    """Answers ``the leftmost|rightmost <colour> object`` from the pixels it
    is shown: connected components of that colour, the extreme one by
    centroid x gets logit +8, everything else -8. A perfect reader of the
    words, so a TTA view with a wrong expression gives a wrong answer."""

    def __init__(self):
        super().__init__(
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=None,
                std=None,
                bgr_to_rgb=True))
        self.decode_head = nn.Module()
        self.decode_head.threshold = 0.5
        self.align_corners = False
        self.out_channels = 1
        self.texts = []

    def answer(self, img, text):
        words = text.split()
        relation, colour = words[1], words[2]
        rgb = torch.tensor(COLORS[colour], dtype=torch.float32)[:, None, None]
        near = ((img - rgb).norm(dim=0) < 60).numpy().astype(np.uint8)
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(near)
        blobs = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 20]
        sign = POSITIONS[relation][1]
        pick = max(blobs, key=lambda i: sign * centroids[i][0])
        logits = torch.full(img.shape[1:], -8.)
        logits[torch.from_numpy(labels == pick)] = 8.
        return logits[None]

    def predict(self, inputs, data_samples):
        self.texts += [s.metainfo['text'] for s in data_samples]
        logits = torch.stack([
            self.answer(img, s.metainfo['text'])
            for img, s in zip(inputs, data_samples)
        ])
        return self.postprocess_result(logits, data_samples)

    def extract_feat(self, inputs):
        raise NotImplementedError

    def encode_decode(self, inputs, batch_data_samples):
        raise NotImplementedError

    def loss(self, inputs, data_samples):
        raise NotImplementedError

    def _forward(self, inputs, data_samples=None):
        raise NotImplementedError


def lateral_scene():
    """Two red objects (left square, right circle) and a blue triangle;
    'the leftmost red object' is the square."""
    objects = [
        dict(
            shape='square',
            color='red',
            cx=30.,
            cy=64.,
            size=28.,
            angle=0.,
            jitter=[0, 0, 0]),
        dict(
            shape='circle',
            color='red',
            cx=98.,
            cy=40.,
            size=26.,
            angle=0.,
            jitter=[0, 0, 0]),
        dict(
            shape='triangle',
            color='blue',
            cx=72.,
            cy=100.,
            size=28.,
            angle=0.,
            jitter=[0, 0, 0]),
    ]
    assert resolve_expression(TEXT, objects) == [0]
    img, masks = render_scene(dict(objects=objects, texture_seed=3), 128)
    return dict(
        img=img,
        gt_seg_map=masks[0],
        referring_mask=masks[0].copy(),
        seg_fields=['gt_seg_map'],
        img_shape=(128, 128),
        ori_shape=(128, 128),
        text=TEXT,
        ref_id=0,
        sent_id=0,
        image_id=0,
        category='square',
        reduce_zero_label=False)


def synthetic_tta_pipeline():
    return Config.fromfile(
        str(REPO / 'configs' / '_base_' / 'datasets' /
            'synthetic_referring.py')).tta_pipeline


def run_tta(tta, pipeline, sample):
    data = pseudo_collate([Compose(copy.deepcopy(pipeline))(sample)])
    with torch.no_grad():
        return tta.test_step(data)[0]


def iou(pred, gt):
    pred, gt = pred.bool(), torch.as_tensor(gt).bool()
    return float((pred & gt).sum() / (pred | gt).sum())


def test_flip_tta_keeps_lateral_expressions_right():
    sample = lateral_scene()
    gt = torch.from_numpy(sample['gt_seg_map']).bool()
    yy, xx = torch.meshgrid(
        torch.arange(128), torch.arange(128), indexing='ij')
    circle = (yy - 40)**2 + (xx - 98)**2 <= 9**2  # inside the red circle
    pipeline = synthetic_tta_pipeline()
    oracle = _ColourOracle()
    result = run_tta(ReferringTTAModel(module=oracle), pipeline, sample)
    # 3 scales (96, 128, 160 px) x 2 flips; the flipped views were asked
    # for the rightmost red object of the mirrored image = the same square
    assert sorted(set(oracle.texts)) == [
        'the leftmost red object', 'the rightmost red object'
    ]
    assert len(oracle.texts) == 6
    assert result.pred_sem_seg.shape == (128, 128)  # the original size
    assert result.seg_logits.shape == (128, 128)
    assert result.text == TEXT and not result.flip  # the un-flipped view
    prob = result.seg_logits.data[0]
    assert iou(result.pred_sem_seg.data[0], gt) > 0.9
    assert prob[circle].max() < 0.01
    # the naive flip (mmseg's RandomFlip, words untouched) asks the mirrored
    # image for its leftmost red object, i.e. the circle: the flipped views
    # answer wrongly and the vote splits 50/50 between square and circle
    naive = copy.deepcopy(pipeline)
    for flip in naive[0]['transforms'][1]:
        flip['type'] = 'RandomFlip'
    oracle = _ColourOracle()
    result = run_tta(ReferringTTAModel(module=oracle), naive, sample)
    assert set(oracle.texts) == {TEXT}
    prob = result.seg_logits.data[0]
    assert prob[circle].min() > 0.4
    assert prob[gt].mean() < 0.6


def test_one_view_equals_the_model():
    """TTA with a single un-augmented view reproduces the model's own mask
    and probabilities (mmseg's SegTTAModel does not: it applies the sigmoid
    to the stored probabilities again and marks everything foreground)."""
    sample = lateral_scene()
    one_view = [
        dict(
            type='TestTimeAug',
            transforms=[[
                dict(type='Resize', scale=(128, 128), keep_ratio=False)
            ], [dict(type='ReferringRandomFlip', prob=0.)],
                        [dict(type='LoadReferringAnnotations')],
                        [dict(type='PackReferringInputs')]])
    ]
    model = tiny_rsrefseg().eval()
    ours = run_tta(ReferringTTAModel(module=model), one_view, sample)
    plain_pipeline = [t[0] for t in one_view[0]['transforms']]
    plain = model.test_step(
        pseudo_collate([Compose(plain_pipeline)(lateral_scene())]))[0]
    torch.testing.assert_close(ours.seg_logits.data, plain.seg_logits.data)
    assert torch.equal(ours.pred_sem_seg.data, plain.pred_sem_seg.data)
    mmseg = run_tta(
        SegTTAModel(module=model), one_view,
        dict(lateral_scene(), img_path='scene.png'))
    assert mmseg.pred_sem_seg.data.all()  # why ReferringTTAModel exists


CONFIGS = sorted((REPO / 'configs' / 'rsrefseg').glob('*.py'))


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.name[:40])
def test_tta_option_works_with_every_config(config, monkeypatch, tmp_path):
    """tools/test.py --tta builds the TTA model and pipeline of any config."""
    tool = load_script('tools/test.py')
    seen = {}
    monkeypatch.setattr(tool, 'Runner', fake_runner(seen))
    monkeypatch.setattr('sys.argv', [
        'test.py',
        str(config), 'ckpt.pth', '--tta', '--work-dir',
        str(tmp_path)
    ])
    tool.main()
    assert seen['ran'] == 'test'
    cfg = seen['cfg']
    assert cfg.model.type == 'ReferringTTAModel'
    assert cfg.model.module.type == 'RSRefSeg'
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    tta = pipeline.transforms[-1]
    assert type(tta).__name__ == 'TestTimeAug'
    flips = {type(sub.transforms[1]).__name__ for sub in tta.subroutines}
    assert flips == {'ReferringRandomFlip'}
    assert len(tta.subroutines) == 6  # 3 scales x 2 flips


def test_tta_without_tta_pipeline_is_a_clear_error(monkeypatch, tmp_path):
    # a config without default_runtime.py: no tta_model
    cfg = tmp_path / 'no_tta.py'
    base = REPO / 'configs' / '_base_'
    cfg.write_text(f"_base_ = ['{base}/models/rsrefseg.py', "
                   f"'{base}/datasets/synthetic_referring.py']\n")
    tool = load_script('tools/test.py')
    monkeypatch.setattr('sys.argv', [
        'test.py',
        str(cfg), 'ckpt.pth', '--tta', '--work-dir',
        str(tmp_path)
    ])
    with pytest.raises(KeyError, match='tta_model'):
        tool.main()
