""".dev_scripts/scene_presence_sweep.py: one row per threshold and colour
mode, the window presences behind them; thresholds below the model's are
left out (windows under it are not decoded)."""
import sys

import torch

from helpers import GRES_CONFIG, load_script, perturbed_model


def test_sweep_prints_a_row_per_threshold(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / 'model.pth'
    torch.save(
        dict(state_dict=perturbed_model(GRES_CONFIG).state_dict(), meta={}),
        ckpt)
    tool = load_script('.dev_scripts/scene_presence_sweep.py')
    monkeypatch.setattr(sys, 'argv', [
        'sweep', GRES_CONFIG,
        str(ckpt), '--size', '256', '--scenes', '1', '--thresholds', '0.9',
        '0.4', '0.5'
    ])
    tool.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| 0.')]
    assert [r.split(' | ')[:2] for r in rows] == [['| 0.5', 'shared'],
                                                  ['| 0.5', 'exclusive'],
                                                  ['| 0.9', 'shared'],
                                                  ['| 0.9', 'exclusive']]
    for row in rows:  # one scene each: x/1 per expression kind
        assert [c.strip()[-2:] for c in row.split('|')[3:6]] == ['/1'] * 3
    windows = [
        line for line in out.splitlines()
        if line.startswith(('| shared |', '| exclusive |'))
    ]
    # 256 px scenes, 128 px windows at stride 96: 3 x 3 windows each
    assert len(windows) == 6
    for line in windows:
        held, other = line.split(' | ')[2:4]
        n_held = int(held.split(',')[0])
        assert n_held + int(other.split(',')[0]) == 9
