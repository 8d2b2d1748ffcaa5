"""ReferringIoUMetric against an independent numpy reference."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.evaluation import ReferringIoUMetric

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def make_sample(pred, gt=None, **meta):
    s = SegDataSample()
    s.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None].long())
    if gt is not None:
        s.gt_sem_seg = PixelData(data=torch.as_tensor(gt)[None].long())
    s.set_metainfo(meta)
    return s


def reference(preds, gts, ignore=255, empty=1.0, inclusive=True):
    """Per-expression IoU via a confusion matrix (np.bincount)."""
    inters, unions = [], []
    for p, g in zip(preds, gts):
        keep = g.ravel() != ignore
        p1 = (p.ravel()[keep] == 1).astype(int)
        g1 = (g.ravel()[keep] == 1).astype(int)
        cm = np.bincount(2 * g1 + p1, minlength=4)  # tn, fp, fn, tp
        inters.append(cm[3])
        unions.append(cm[1] + cm[2] + cm[3])
    inters, unions = np.array(inters, float), np.array(unions, float)
    ious = np.array([i / u if u else empty for i, u in zip(inters, unions)])
    out = {
        'oIoU': 100 * inters.sum() / unions.sum(),
        'mIoU': 100 * ious.mean()
    }
    for t in THRESHOLDS:
        out[f'Pr@{t:g}'] = 100 * np.mean(ious >= t if inclusive else ious > t)
    return out, ious


def random_case(rng, n=12):
    preds, gts, cats = [], [], []
    for k in range(n):
        h, w = rng.integers(20, 60, size=2)  # images of different sizes
        gt = np.zeros((h, w), np.int64)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        gt[y:y + h // 2, x:x + w // 2] = 1
        pred = gt.copy()
        flip = rng.random((h, w)) < rng.uniform(0.0, 0.4)
        pred[flip] = 1 - pred[flip]
        gt[rng.random((h, w)) < 0.05] = 255  # ignore pixels
        preds.append(pred)
        gts.append(gt)
        cats.append(['ship', 'vehicle', 'bridge'][k % 3])
    return preds, gts, cats


def run_metric(preds, gts, cats=None, **cfg):
    init_default_scope('mmseg')
    metric = METRICS.build(dict(type='ReferringIoUMetric', **cfg))
    metric.dataset_meta = dict(classes=('background', 'target'))
    evaluator = Evaluator(metric)
    for k, (p, g) in enumerate(zip(preds, gts)):
        meta = dict(ref_id=k, sent_id=10 + k, img_path=f'/x/img{k}.jpg')
        if cats is not None:
            meta['category'] = cats[k]
        evaluator.process([make_sample(p, g, **meta)])
    return evaluator.evaluate(len(preds)), metric


def test_matches_numpy_reference():
    preds, gts, cats = random_case(np.random.default_rng(0))
    metrics, _ = run_metric(preds, gts, cats)
    ref, _ = reference(preds, gts)
    for k, v in ref.items():
        assert metrics[f'refer/{k}'] == pytest.approx(v, abs=1e-3), k


def test_per_category():
    preds, gts, cats = random_case(np.random.default_rng(1), n=9)
    metrics, _ = run_metric(preds, gts, cats)
    for cat in ('ship', 'vehicle', 'bridge'):
        idx = [i for i, c in enumerate(cats) if c == cat]
        ref, _ = reference([preds[i] for i in idx], [gts[i] for i in idx])
        assert metrics[f'refer/mIoU/{cat}'] == pytest.approx(
            ref['mIoU'], abs=1e-3)
        assert metrics[f'refer/oIoU/{cat}'] == pytest.approx(
            ref['oIoU'], abs=1e-3)
    nocat, _ = run_metric(preds, gts)
    assert not any('/mIoU/' in k for k in nocat)


def test_oiou_equals_mmseg_iou_metric_foreground():
    preds, gts, _ = random_case(np.random.default_rng(2))
    metrics, _ = run_metric(preds, gts)
    inter = union = 0.0
    for p, g in zip(preds, gts):
        i, u, _, _ = IoUMetric.intersect_and_union(
            torch.as_tensor(p), torch.as_tensor(g), 2, 255)
        inter += float(i[1])
        union += float(u[1])
    assert metrics['refer/oIoU'] == pytest.approx(
        100 * inter / union, abs=1e-3)
    # and through mmseg's own metric (per-class IoU table)
    mm = IoUMetric(iou_metrics=['mIoU'])
    mm.dataset_meta = dict(classes=('background', 'target'))
    for p, g in zip(preds, gts):
        mm.process({}, [make_sample(p, g).to_dict()])
    res = tuple(zip(*mm.results))
    fg = float(sum(res[0])[1] / sum(res[1])[1])
    assert metrics['refer/oIoU'] == pytest.approx(100 * fg, abs=1e-3)


def test_edge_cases_and_empty_union():
    h, w = 8, 10
    full = np.ones((h, w), np.int64)
    zero = np.zeros((h, w), np.int64)
    ign = np.full((h, w), 255, np.int64)
    half = zero.copy()
    half[:, :5] = 1
    preds = [zero, full, zero, full, half, zero]
    gts = [full, zero, zero, ign, full, ign]
    # IoUs: empty pred -> 0; empty target, pred -> 0; both empty -> empty;
    # all ignored -> empty; half -> 0.5; all ignored, empty pred -> empty
    for empty in (1.0, 0.0):
        metrics, _ = run_metric(preds, gts, empty_union_iou=empty)
        ref, ious = reference(preds, gts, empty=empty)
        np.testing.assert_allclose(ious, [0, 0, empty, empty, 0.5, empty])
        for k, v in ref.items():
            assert metrics[f'refer/{k}'] == pytest.approx(v, abs=1e-3), k


def test_inclusive_threshold():
    half = np.zeros((4, 4), np.int64)
    half[:, :2] = 1
    full = np.ones((4, 4), np.int64)
    incl, _ = run_metric([half], [full])
    excl, _ = run_metric([half], [full], inclusive=False)
    assert incl['refer/Pr@0.5'] == 100.0  # IoU exactly 0.5
    assert excl['refer/Pr@0.5'] == 0.0
    assert incl['refer/mIoU'] == excl['refer/mIoU'] == 50.0


def _nearest(a, size):
    h, w = a.shape
    ys = np.arange(size[0]) * h // size[0]
    xs = np.arange(size[1]) * w // size[1]
    return a[ys][:, xs]


def test_eval_size_resizes_both_nearest():
    rng = np.random.default_rng(3)
    preds, gts = [], []
    for h, w in [(60, 120), (240, 960), (480, 480)]:
        g = (rng.random((h, w)) < 0.3).astype(np.int64)
        g[rng.random((h, w)) < 0.05] = 255
        p = (rng.random((h, w)) < 0.3).astype(np.int64)
        preds.append(p)
        gts.append(g)
    metrics, _ = run_metric(preds, gts, eval_size=(480, 480))
    ref, _ = reference([_nearest(p, (480, 480)) for p in preds],
                       [_nearest(g, (480, 480)) for g in gts])
    for k, v in ref.items():
        assert metrics[f'refer/{k}'] == pytest.approx(v, abs=1e-3), k
    orig, _ = run_metric(preds, gts)
    assert orig['refer/oIoU'] != pytest.approx(metrics['refer/oIoU'], abs=1e-3)


def test_results_are_small_and_collectable():
    preds, gts, cats = random_case(np.random.default_rng(4), n=3)
    init_default_scope('mmseg')
    metric = ReferringIoUMetric()
    metric.process({}, [
        make_sample(p, g, category=c).to_dict()
        for p, g, c in zip(preds, gts, cats)
    ])
    assert len(metric.results) == 3
    for r in metric.results:
        assert set(r) == {
            'intersection', 'union', 'pred_px', 'target_px', 'category',
            'ref_id', 'sent_id'
        }
        for key in ('intersection', 'union', 'pred_px', 'target_px'):
            assert isinstance(r[key], int)


def test_size_mismatch_names_sample():
    metric = ReferringIoUMetric()
    s = make_sample(
        np.zeros((4, 4)), np.zeros((5, 4)), ref_id=77, img_path='/d/a.jpg')
    with pytest.raises(ValueError, match=r'a\.jpg.*ref_id=77.*differ'):
        metric.process({}, [s.to_dict()])


def test_output_dir_and_format_only(tmp_path):
    pred = np.zeros((6, 7), np.int64)
    pred[2:4, 1:5] = 1
    metric = ReferringIoUMetric(output_dir=str(tmp_path), format_only=True)
    metric.process({}, [
        make_sample(pred, None, ref_id=3, sent_id=9,
                    img_path='/d/00012.jpg').to_dict()
    ])
    assert metric.compute_metrics(metric.results) == {}
    png = np.array(Image.open(tmp_path / '00012_ref3_sent9.png'))
    np.testing.assert_array_equal(png, pred * 255)
    with pytest.raises(ValueError, match='output_dir'):
        ReferringIoUMetric(format_only=True)


def test_table_is_logged(monkeypatch):
    from rsrefseg_mm.evaluation.metrics import referring_iou_metric as mod
    logged = []
    monkeypatch.setattr(mod, 'print_log',
                        lambda msg, **kw: logged.append(str(msg)))
    preds, gts, cats = random_case(np.random.default_rng(5), n=3)
    run_metric(preds, gts, cats)
    text = '\n'.join(logged)
    for word in ('category', 'all', 'ship', 'vehicle', 'bridge', 'Pr@0.9'):
        assert word in text


def test_generalized_referring_hand_computed():
    # four 2x2 expressions:
    #   a: target, prediction half right   I=1 U=2 -> 0.5, predicted
    #   b: target, empty prediction        I=0 U=1 -> 0,   not predicted
    #   c: no target, empty prediction     union 0 -> 1 (a correct "none")
    #   d: no target, 1 pixel predicted    I=0 U=1 -> 0
    z = np.zeros((2, 2), np.int64)
    one = np.array([[1, 0], [0, 0]])
    preds = [np.array([[1, 1], [0, 0]]), z, z, one]
    gts = [one, one, z, z]
    metric = ReferringIoUMetric(generalized=True, empty_union_iou=0.0)
    metric.process(None, [make_sample(p, g) for p, g in zip(preds, gts)])
    res = metric.compute_metrics(metric.results)
    assert res['gIoU'] == pytest.approx(100 * (0.5 + 0 + 1 + 0) / 4)
    # mIoU follows empty_union_iou (0 here); gIoU does not
    assert res['mIoU'] == pytest.approx(100 * 0.5 / 4)
    assert res['N-acc'] == pytest.approx(50.0)  # c right, d wrong
    assert res['T-acc'] == pytest.approx(50.0)  # a right, b wrong
    # oIoU: I = 1, U = 2 + 1 + 0 + 1 (d's false positive counts)
    assert res['oIoU'] == pytest.approx(100 * 1 / 4)


def test_generalized_keys_only_when_asked_and_defined():
    one = np.array([[1, 0], [0, 0]])
    plain, _ = run_metric([one], [one])
    assert 'refer/mIoU' in plain
    assert not {'refer/gIoU', 'refer/N-acc', 'refer/T-acc'} & set(plain)
    metric = ReferringIoUMetric(generalized=True)
    metric.process(None, [make_sample(one, one)])
    res = metric.compute_metrics(metric.results)
    assert res['gIoU'] == 100.0 and res['T-acc'] == 100.0
    assert 'N-acc' not in res  # no no-target expression to judge


def test_generalized_per_category_table(monkeypatch):
    z = np.zeros((2, 2), np.int64)
    one = np.array([[1, 0], [0, 0]])
    metric = ReferringIoUMetric(generalized=True)
    metric.process(None, [
        make_sample(z, z, category='none'),
        make_sample(one, one, category='tank')
    ])
    res = metric.compute_metrics(metric.results)
    assert res['N-acc'] == 100.0 and res['T-acc'] == 100.0
    assert res['mIoU/none'] == 100.0
