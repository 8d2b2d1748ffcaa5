"""Does `make demo` reach the text-driven regime whatever the seed and the
thread count? Runs ``scripts/demo.sh`` for every (seed, threads) pair and
prints one table row per run::

    python .dev_scripts/demo_sweep.py --seeds 0 1 2 3 4 \\
        --threads 1 2 --work-dir work_dirs/demo_sweep

Each run trains with ``--cfg-options randomness.seed=SEED`` and
``DEMO_TRAIN_THREADS=THREADS`` into ``WORK_DIR/seedSEED_tTHREADS`` and is
tested on the held-out split, then with shuffled expressions (demo.sh's
steps 2 and 3). A run passes when its test mIoU is at least ``--min-miou``
(50) and its shuffled-expression mIoU at most ``--max-shuffled-ratio``
(0.5) of it: the words, not a salient-object guess, drive the mask. A run
whose metrics are already in its folder is not repeated (``--rerun`` to
force it), so an interrupted sweep continues where it stopped.

A run also has to finish within ``--max-minutes`` (10, the demo's budget):
wall time is demo.sh's whole run (train, both tests, image demo).
Runs share the CPU by their thread counts: with ``--cores 2`` (default: all
cores) two 1-thread demos run side by side, 2-thread demos one at a time, so
a run's training threads have cores of their own (the test steps of two
side-by-side runs still compete, which only makes wall times pessimistic).
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))
DEMO = osp.join(REPO, 'scripts', 'demo.sh')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--work-dir', default='work_dirs/demo_sweep')
    parser.add_argument(
        '--cores',
        type=int,
        default=os.cpu_count() or 1,
        help='cores to fill: cores // threads demos run at '
        'the same time (default: all)')
    parser.add_argument('--min-miou', type=float, default=50.0)
    parser.add_argument('--max-shuffled-ratio', type=float, default=0.5)
    parser.add_argument(
        '--max-minutes',
        type=float,
        default=10.0,
        help="a run must finish within this (the demo's "
        'budget)')
    parser.add_argument(
        '--rerun', action='store_true', help='repeat runs whose metrics exist')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='print the commands, run nothing')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='more train-time overrides (key=value)')
    args = parser.parse_args(argv)
    if args.cores < 1 or min(args.threads) < 1:
        parser.error('--cores and --threads must be >= 1')
    # demo.sh runs from the repository root
    args.work_dir = osp.abspath(args.work_dir)
    return args


def run_dir(work_dir: str, seed: int, threads: int) -> str:
    return osp.join(work_dir, f'seed{seed}_t{threads}')


def read_metrics(folder: str) -> Optional[dict]:
    """Newest ``<timestamp>/<timestamp>.json`` that tools/test.py wrote."""
    files = sorted(glob.glob(osp.join(folder, '*', '*.json')))
    if not files:
        return None
    with open(files[-1]) as f:
        return json.load(f)


def demo_command(seed: int,
                 threads: int,
                 work: str,
                 cfg_options: Sequence[str] = ()) -> Dict:
    """argv and environment of one ``scripts/demo.sh`` run."""
    env = dict(os.environ, DEMO_WORK_DIR=work, DEMO_TRAIN_THREADS=str(threads))
    argv = [
        'bash', DEMO, '--cfg-options', f'randomness.seed={seed}', *cfg_options
    ]
    return dict(argv=argv, env=env)


def collect(work: str, seed: int, threads: int,
            seconds: Optional[float]) -> dict:
    """One table row from a finished run's folder."""
    true = read_metrics(osp.join(work, 'test'))
    shuffled = read_metrics(osp.join(work, 'test_shuffled'))
    if seconds is None:  # a run of an earlier sweep
        try:
            with open(osp.join(work, 'sweep_wall_time.txt')) as f:
                seconds = float(f.read())
        except (OSError, ValueError):
            seconds = None
    row = dict(
        seed=seed,
        threads=threads,
        seconds=seconds,
        miou=None,
        shuffled=None,
        passed=False)
    if true is not None and shuffled is not None:
        row.update(
            miou=float(true['refer/mIoU']),
            shuffled=float(shuffled['refer/mIoU']))
    return row


def judge(row: dict,
          min_miou: float,
          max_ratio: float,
          max_minutes: float = 10.0) -> dict:
    """``passed``: test mIoU >= ``min_miou``, shuffled-expression mIoU <=
    ``max_ratio`` x test mIoU, and (when known) wall time <=
    ``max_minutes``."""
    row = dict(row)
    in_time = row['seconds'] is None or row['seconds'] <= 60 * max_minutes
    row['passed'] = row['miou'] is not None and row['miou'] >= min_miou \
        and row['shuffled'] <= max_ratio * row['miou'] and in_time
    return row


def run_one(args: argparse.Namespace, seed: int, threads: int) -> dict:
    work = run_dir(args.work_dir, seed, threads)
    done = read_metrics(osp.join(work, 'test')) is not None and \
        read_metrics(osp.join(work, 'test_shuffled')) is not None
    seconds = None
    if args.rerun or not done:
        cmd = demo_command(seed, threads, work, args.cfg_options)
        if args.dry_run:
            print(f'DEMO_WORK_DIR={work} DEMO_TRAIN_THREADS={threads} ' +
                  ' '.join(cmd['argv']))
            return dict(
                seed=seed,
                threads=threads,
                seconds=None,
                miou=None,
                shuffled=None,
                passed=False)
        os.makedirs(work, exist_ok=True)
        log = osp.join(work, 'demo.log')
        print(
            f'seed {seed}, {threads} thread(s): running, log {log}',
            flush=True)
        start = time.time()
        with open(log, 'w') as f:
            rc = subprocess.call(
                cmd['argv'],
                env=cmd['env'],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT)
        seconds = time.time() - start
        if rc:
            print(
                f'seed {seed}, {threads} thread(s): demo.sh failed '
                f'(exit {rc}), see {log}',
                flush=True)
        else:
            with open(osp.join(work, 'sweep_wall_time.txt'), 'w') as f:
                f.write(f'{seconds:.0f}\n')
    return judge(
        collect(work, seed, threads, seconds), args.min_miou,
        args.max_shuffled_ratio, args.max_minutes)


def table(rows: List[dict],
          min_miou: float = 50.0,
          max_ratio: float = 0.5,
          max_minutes: float = 10.0) -> str:
    """Markdown table of the runs and one summary line per thread count."""
    lines = [
        '| seed | threads | test mIoU | shuffled mIoU | shuffled / test | '
        'wall time | pass |', '|---|---|---|---|---|---|---|'
    ]
    for r in sorted(rows, key=lambda r: (r['threads'], r['seed'])):
        if r['miou'] is None:
            cells = ['-', '-', '-']
        else:
            cells = [
                f'{r["miou"]:.2f}', f'{r["shuffled"]:.2f}',
                f'{r["shuffled"] / max(r["miou"], 1e-9):.2f}'
            ]
        wall = '-' if r['seconds'] is None else \
            f'{int(r["seconds"]) // 60} min {int(r["seconds"]) % 60:02d} s'
        lines.append(f'| {r["seed"]} | {r["threads"]} | ' + ' | '.join(cells) +
                     f' | {wall} | {"yes" if r["passed"] else "no"} |')
    lines.append('')
    for threads in sorted({r['threads'] for r in rows}):
        group = [r for r in rows if r['threads'] == threads]
        ok = sum(r['passed'] for r in group)
        lines.append(f'{threads} thread(s): {ok} of {len(group)} seeds pass '
                     f'(test mIoU >= {min_miou:g}, shuffled <= '
                     f'{max_ratio:g} x test, <= {max_minutes:g} min)')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    for threads in args.threads:  # one thread count after the other
        jobs = max(1, args.cores // threads)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            rows += list(
                pool.map(lambda s: run_one(args, s, threads), args.seeds))
    if args.dry_run:
        return 0
    print(
        table(rows, args.min_miou, args.max_shuffled_ratio, args.max_minutes))
    return 0 if all(r['miou'] is not None for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
