""".dev_scripts/filter_stats.py on the tiny config."""
import re

from helpers import TINY_CONFIG as TINY
from helpers import load_script

filter_stats = load_script('.dev_scripts/filter_stats.py')


def saturated(out: str, row: str) -> float:
    line = next(li for li in out.splitlines() if li.startswith(f'| {row} '))
    return float(re.search(r'([\d.]+) % \|$', line).group(1))


def test_reports_scale_window_and_saturation(capsys):
    assert filter_stats.main([TINY, '--num-samples', '6']) == 0
    out = capsys.readouterr().out
    # random CLIP-like towers: scale 1/0.07, the tiny config's bias -2
    assert 'filter scale s = 14.29, bias b = -2;' in out
    assert '[-0.0700, 0.3500]' in out
    for row in ('local cosine', 'local filter', 'global cosine',
                'global filter'):
        assert f'| {row} |' in out
    assert 0 < saturated(out, 'global filter') < 100


def test_calibrated_neck_starts_unsaturated(capsys):
    filter_stats.main([
        TINY, '--num-samples', '6', '--cfg-options',
        'model.neck.filter_cfg.init_bias=-10.0',
        'model.neck.filter_cfg.gain=True'
    ])
    plain = capsys.readouterr().out
    filter_stats.main([
        TINY, '--num-samples', '6', '--cfg-options',
        'model.neck.filter_cfg.type=calibrated',
        'model.neck.filter_cfg.init_bias=-10.0',
        'model.neck.filter_cfg.std=2.0'
    ])
    calibrated = capsys.readouterr().out
    assert saturated(plain, 'global filter') > 90
    assert saturated(calibrated, 'global filter') < 10
