""".dev_scripts/demo_sweep.py with a stand-in for scripts/demo.sh."""
import json
import os
import stat

from helpers import load_script

demo_sweep = load_script('.dev_scripts/demo_sweep.py')

# writes what demo.sh's test steps write: <work>/test/<ts>/<ts>.json and
# <work>/test_shuffled/<ts>/<ts>.json; seed 1 ignores the words (shuffled
# as good as true), seed 2 fails, the others pass
FAKE_DEMO = r'''#!/usr/bin/env bash
set -e
seed=${2#randomness.seed=}
echo "$DEMO_TRAIN_THREADS $*" >> "$DEMO_WORK_DIR/../../calls.txt"
[ "$seed" = 2 ] && exit 3
val=$(( 50 + seed + DEMO_TRAIN_THREADS ))
shuf=$([ "$seed" = 1 ] && echo 40 || echo 20)
for sub in test test_shuffled; do mkdir -p "$DEMO_WORK_DIR/$sub/20261128"; done
echo "{\"refer/mIoU\": $val}" > "$DEMO_WORK_DIR/test/20261128/20261128.json"
echo "{\"refer/mIoU\": $shuf}" > \
    "$DEMO_WORK_DIR/test_shuffled/20261128/20261128.json"
'''


def fake_demo(tmp_path, monkeypatch):
    script = tmp_path / 'demo.sh'
    script.write_text(FAKE_DEMO)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(demo_sweep, 'DEMO', str(script))
    return tmp_path / 'sweep'


def test_sweep_runs_every_pair_and_prints_the_table(tmp_path, monkeypatch,
                                                    capsys):
    work = fake_demo(tmp_path, monkeypatch)
    rc = demo_sweep.main([
        '--seeds', '0', '1', '2', '--threads', '1', '2', '--work-dir',
        str(work), '--cores', '2', '--cfg-options', 'train_cfg.max_iters=10'
    ])
    assert rc == 1  # seed 2 has no metrics
    out = capsys.readouterr().out
    calls = sorted((tmp_path / 'calls.txt').read_text().splitlines())
    assert len(calls) == 6
    assert calls[0].endswith('--cfg-options randomness.seed=0 '
                             'train_cfg.max_iters=10')
    assert '| 0 | 1 | 51.00 | 20.00 | 0.39 |' in out
    assert '| 1 | 2 | 53.00 | 40.00 | 0.75 |' in out  # words ignored
    assert '| 2 | 1 | - | - | - |' in out
    assert '1 thread(s): 1 of 3 seeds pass' in out
    assert '2 thread(s): 1 of 3 seeds pass' in out
    assert (work / 'seed0_t2' / 'demo.log').exists()
    assert (work / 'seed0_t2' / 'sweep_wall_time.txt').exists()

    # finished runs are not repeated; their wall time is kept
    os.remove(tmp_path / 'calls.txt')
    rc = demo_sweep.main(
        ['--seeds', '0', '--threads', '1', '--work-dir',
         str(work)])
    assert rc == 0
    assert not (tmp_path / 'calls.txt').exists()
    assert '| 0 | 1 | 51.00 | 20.00 | 0.39 | 0 min 0' in \
        capsys.readouterr().out
    demo_sweep.main(
        ['--seeds', '0', '--threads', '1', '--work-dir',
         str(work), '--rerun'])
    assert len((tmp_path / 'calls.txt').read_text().splitlines()) == 1


def test_dry_run_prints_commands(tmp_path, monkeypatch, capsys):
    work = fake_demo(tmp_path, monkeypatch)
    assert demo_sweep.main([
        '--seeds', '3', '--threads', '2', '--work-dir',
        str(work), '--dry-run'
    ]) == 0
    out = capsys.readouterr().out
    assert f'DEMO_WORK_DIR={work}/seed3_t2 DEMO_TRAIN_THREADS=2 bash' in out
    assert 'randomness.seed=3' in out
    assert not work.exists()


def test_judge_thresholds():
    row = dict(seed=0, threads=1, seconds=600, miou=50.0, shuffled=25.0)
    assert demo_sweep.judge(row, 50, 0.5)['passed']
    assert not demo_sweep.judge(dict(row, shuffled=25.1), 50, 0.5)['passed']
    assert not demo_sweep.judge(dict(row, miou=49.9), 50, 0.5)['passed']
    # over the demo's 10-minute budget
    assert not demo_sweep.judge(dict(row, seconds=601), 50, 0.5)['passed']
    assert demo_sweep.judge(
        dict(row, seconds=601), 50, 0.5, max_minutes=11)['passed']
    assert '| 0 | 1 | 50.00 | 25.00 | 0.50 | 10 min 00 s | yes |' in \
        demo_sweep.table([demo_sweep.judge(row, 50, 0.5)])


def test_read_metrics_takes_the_newest(tmp_path):
    for ts, v in (('20261128_010000', 1.0), ('20261128_020000', 2.0)):
        (tmp_path / ts).mkdir()
        (tmp_path / ts / f'{ts}.json').write_text(
            json.dumps({'refer/mIoU': v}))
    assert demo_sweep.read_metrics(str(tmp_path))['refer/mIoU'] == 2.0
    assert demo_sweep.read_metrics(str(tmp_path / 'none')) is None
