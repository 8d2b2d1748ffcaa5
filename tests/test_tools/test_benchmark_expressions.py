"""benchmark.py --expressions-per-image: the predictor path next to K
one-pass forwards, on the tiny config."""
from helpers import TINY_CONFIG, load_script


def test_expressions_per_image_table(capsys, monkeypatch):
    bm = load_script('tools/analysis_tools/benchmark.py')
    from rsrefseg_mm.models.segmentors import RSRefSeg
    calls = {'encode': 0, 'predict': 0}
    encode, predict = RSRefSeg.encode_image, RSRefSeg.predict

    def counting_encode(self, *args, **kwargs):
        calls['encode'] += 1
        return encode(self, *args, **kwargs)

    def counting_predict(self, *args, **kwargs):
        calls['predict'] += 1
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(RSRefSeg, 'encode_image', counting_encode)
    monkeypatch.setattr(RSRefSeg, 'predict', counting_predict)
    out = bm.main([
        TINY_CONFIG, '--expressions-per-image', '3', '--repeats', '2',
        '--warmup', '0', '--device', 'cpu'
    ])
    res = out['expressions']
    assert set(res) == {'first', 'follow_up', 'predictor_k', 'forwards_k'}
    assert all(r['n'] == 2 and r['median'] > 0 for r in res.values())
    # per round: predictor encodes twice (first query, K batch), the
    # one-pass forwards go through predict once per expression, and each of
    # those encodes the image again (extract_feat)
    assert calls['predict'] == 2 * 3
    assert calls['encode'] == 2 * (2 + 3)
    text = capsys.readouterr().out
    assert '| 3 expressions, predictor (1 encode) |' in text
    assert 'follow-up / first:' in text and '3 forwards / predictor:' in text
