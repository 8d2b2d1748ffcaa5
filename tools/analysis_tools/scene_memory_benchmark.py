"""Peak memory and time of one prediction on large synthetic GeoTIFF scenes.

For each scene size a 4-band uint16 GeoTIFF (tiled 256 x 256, deflate,
EPSG:32633 at 0.5 m, a nodata margin, field parcels of 512 x 512 px) is
written block by block into a temporary folder, then measured in fresh
subprocesses (one per repeat, so that peaks do not mix): the demo's path -
load the model, ``ReferringPredictor.set_image`` (read, stretch, encode),
``predict`` and ``save_referring_outputs`` (overlay, heat map, mask GeoTIFF,
GeoJSON). The scene is deleted afterwards. A subprocess whose resident
memory passes ``--rss-limit-gb`` is stopped and reported as such. Memory
is read from ``/proc`` (Linux).

The table (Markdown, medians over the repeats) gives, per scene: the file
size, the read + encode time, the time to the saved outputs after the model
is loaded, the process wall time (interpreter start, imports and model
included), the resident memory once the model is loaded and the peak.

Example::

    python tools/analysis_tools/scene_memory_benchmark.py \\
        --sizes 8192 16384 32768 --repeats 3

The subprocesses import ``rsrefseg_mm`` as the environment does, so
``PYTHONPATH=<other checkout>`` measures another version of the package
(e.g. one without decimated reads); see docs/large_scenes.md.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

#: Repository root.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The tiny demo config (128 px input: a 256 px working size).
TINY_CONFIG = osp.join(
    REPO, 'configs', 'rsrefseg', 'rsrefseg-tiny_clip-tiny-sam-tiny_'
    '1xb16-adamw-1200it_synthetic-128x128.py')
#: Rows written per block when generating a scene, and GDAL's block cache
#: meanwhile (keeps this process small: its children are measured).
WRITE_ROWS = 256
WRITE_CACHE_BYTES = 256 * 2**20
#: Parcel size (px) and nodata margin (fraction of the width) of the scenes.
PARCEL = 512
MARGIN = 1 / 64


def write_scene(path: str, size: int, overviews: bool = False) -> float:
    """Write a ``size`` x ``size`` 4-band uint16 GeoTIFF block by block.

    Args:
        path (str): Output file.
        size (int): Width and height in pixels.
        overviews (bool): Also build internal overviews (average; factors
            4, 16, ... down to 256 px).

    Returns:
        float: Seconds taken.
    """
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    start = time.perf_counter()
    profile = dict(
        driver='GTiff',
        width=size,
        height=size,
        count=4,
        dtype='uint16',
        crs='EPSG:32633',
        transform=from_origin(400000, 5000000, 0.5, 0.5),
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress='deflate',
        BIGTIFF='IF_SAFER')
    cols = np.arange(size, dtype=np.int32)[None] // PARCEL
    margin = int(size * MARGIN)
    with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES), \
            rasterio.open(path, 'w', **profile) as dst:
        for r0 in range(0, size, WRITE_ROWS):
            h = min(WRITE_ROWS, size - r0)
            rows = np.arange(r0, r0 + h, dtype=np.int32)[:, None] // PARCEL
            parcel = (rows * 7 + cols * 13) % 17
            block = np.empty((4, h, size), np.uint16)
            for b in range(4):
                block[b] = 300 + 150 * b + parcel * (40 + 10 * b)
            block[:, :, :margin] = 0
            dst.write(block, window=Window(0, r0, size, h))
    if overviews:
        from rasterio.enums import Resampling
        factors = [4**i for i in range(1, 12) if size // 4**i >= 256]
        with rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_BYTES), \
                rasterio.open(path, 'r+') as dst:
            dst.build_overviews(factors, Resampling.average)
    return time.perf_counter() - start


def proc_status_mib(pid: object, key: str) -> Optional[float]:
    """A memory figure of ``/proc/<pid>/status`` in MiB (None once the
    process is gone).

    ``VmHWM`` (peak resident memory) is used rather than ``getrusage``'s
    ``ru_maxrss``, which Linux carries over ``fork`` + ``exec`` from the
    parent process.
    """
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child(args: argparse.Namespace) -> None:
    """One measurement (runs in its own process); prints a JSON line."""
    start = time.perf_counter()
    import rsrefseg_mm
    from rsrefseg_mm.apis import (ReferringPredictor, init_referring_model,
                                  save_referring_outputs)
    model = init_referring_model(args.config, args.checkpoint)
    predictor = ReferringPredictor(model)
    loaded = time.perf_counter()
    model_rss = proc_status_mib('self', 'VmHWM')
    image = predictor.set_image(args.scene, bands=(3, 2, 1))
    read = time.perf_counter()
    result = predictor.predict('the bright field')
    extra = {}
    if args.output_resolution != 'working':
        extra = dict(
            output_resolution=args.output_resolution,
            threshold=model.decode_head.threshold)
    save_referring_outputs(image, result, 'the bright field', args.out_dir,
                           'scene', **extra)
    done = time.perf_counter()
    print(
        json.dumps(
            dict(
                shape=list(image.img.shape[:2]),
                load_s=loaded - start,
                read_s=read - loaded,
                infer_s=done - loaded,
                model_rss=model_rss,
                peak_rss=proc_status_mib('self', 'VmHWM'),
                package=osp.dirname(rsrefseg_mm.__file__))),
        flush=True)


def measure(scene: str, out_dir: str, args: argparse.Namespace) -> Dict:
    """Run :func:`child` in a subprocess, stopping it past the RSS limit.

    Returns:
        dict: The child's figures plus ``wall_s``, or ``killed`` with the
        memory seen when it was stopped.
    """
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--child', scene, '--config', args.config,
        '--out-dir', out_dir, '--output-resolution', args.output_resolution
    ]
    if args.checkpoint:
        cmd += ['--checkpoint', args.checkpoint]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    limit = args.rss_limit_gb * 1024
    seen = 0.0
    while proc.poll() is None:
        seen = max(seen, proc_status_mib(proc.pid, 'VmRSS') or 0.0)
        if seen > limit:
            proc.kill()
            proc.wait()
            return dict(killed=True, peak_rss=seen)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f'measurement of {scene} failed:\n{err[-3000:]}')
    figures = json.loads(out.strip().splitlines()[-1])
    figures['wall_s'] = wall
    return figures


def median(runs: List[Dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(rows: List[Dict]) -> str:
    """The Markdown table of the measured scenes."""
    lines = [
        '| scene (px) | file | image read (px) | read + encode (s) | '
        'to outputs (s) | process wall (s) | RSS, model loaded (MiB) | '
        'peak RSS (MiB) | runs |', '|' + '---|' * 9
    ]
    for row in rows:
        size, runs = row['size'], row['runs']
        name = f'{size:,} x {size:,}'
        file_mb = f'{row["file_mb"]:.1f} MB'
        if row['overviews']:
            file_mb += ' (overviews)'
        done = [r for r in runs if not r.get('killed')]
        if not done:
            seen = max(r['peak_rss'] for r in runs)
            lines.append(f'| {name} | {file_mb} | - | - | - | - | - | '
                         f'stopped at {seen:.0f} | 0 of {len(runs)} |')
            continue
        h, w = done[0]['shape']
        peak = f'{median(done, "peak_rss"):.0f}'
        if len(done) > 1:
            peak += f' (max {max(r["peak_rss"] for r in done):.0f})'
        lines.append(
            f'| {name} | {file_mb} | {w} x {h} | '
            f'{median(done, "read_s"):.2f} | {median(done, "infer_s"):.2f} '
            f'| {median(done, "wall_s"):.1f} | '
            f'{median(done, "model_rss"):.0f} | {peak} | {len(done)} |')
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[8192, 16384, 32768],
        help='scene widths (= heights) in pixels')
    parser.add_argument(
        '--repeats',
        type=int,
        default=3,
        help='subprocesses per scene (medians reported)')
    parser.add_argument(
        '--config',
        default=TINY_CONFIG,
        help='model config (default: the tiny demo model)')
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='trained checkpoint (default: random weights; '
        'time and memory do not depend on them)')
    parser.add_argument(
        '--overviews',
        action='store_true',
        help='build internal overviews in the scenes')
    parser.add_argument(
        '--output-resolution',
        default='working',
        choices=('working', 'native'),
        help='grid of the mask GeoTIFF written')
    parser.add_argument(
        '--rss-limit-gb',
        type=float,
        default=6.0,
        help='stop a measurement whose resident memory '
        'passes this (default 6)')
    parser.add_argument(
        '--work-dir',
        default=None,
        help='folder for the scenes (default: a temporary '
        'folder); each scene is deleted after it is '
        'measured')
    parser.add_argument('--child', metavar='SCENE', help=argparse.SUPPRESS)
    parser.add_argument('--out-dir', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        args.scene = args.child
        return child(args)
    root = tempfile.mkdtemp(prefix='scene_bench_', dir=args.work_dir)
    rows = []
    try:
        for size in args.sizes:
            scene = osp.join(root, f'scene_{size}.tif')
            secs = write_scene(scene, size, args.overviews)
            file_mb = os.path.getsize(scene) / 1e6
            print(
                f'{size} x {size}: written in {secs:.1f} s '
                f'({file_mb:.1f} MB)',
                file=sys.stderr,
                flush=True)
            runs = []
            for i in range(args.repeats):
                runs.append(measure(scene, osp.join(root, f'out_{i}'), args))
                print(
                    f'  run {i + 1}: {json.dumps(runs[-1])}',
                    file=sys.stderr,
                    flush=True)
                if runs[-1].get('killed'):
                    break
            os.remove(scene)
            rows.append(
                dict(
                    size=size,
                    file_mb=file_mb,
                    runs=runs,
                    overviews=args.overviews))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(rows))


if __name__ == '__main__':
    main()
