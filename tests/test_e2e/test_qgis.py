"""QGIS opens the georeferenced outputs of the README's GeoTIFF one-liner
at the right place (``make test-qgis``; not in the default suite).

Writes a synthetic 16-bit 4-band GeoTIFF (EPSG:32633, 0.5 m pixels, a
nodata strip), runs ``demo/image_demo.py ... --bands 3 2 1 --out-dir`` on
it, whole and with a pixel ``--roi``, and hands the outputs to
``.dev_scripts/qgis_check.py`` under the Python that has PyQGIS
(``$QGIS_PYTHON``, default ``/usr/bin/python3``; Debian packages
``python3-qgis qgis-providers``): layers valid, one CRS, the mask on the
image's pixel grid (or the crop's), QGIS's samples equal to the PNG
prediction pixel by pixel, polygons equal to the mask's regions, and the
image visible under the mask in a QGIS rendering (screenshots in
``work_dirs/test_qgis/``).

Checkpoint: ``$QGIS_TEST_CHECKPOINT``, else the one ``make demo`` leaves
(an untrained model may predict nothing, which checks nothing).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TINY_CONFIG

pytestmark = pytest.mark.qgis

QGIS_PYTHON = os.environ.get('QGIS_PYTHON', '/usr/bin/python3')
OUT = REPO / 'work_dirs' / 'test_qgis'


def demo_checkpoint() -> str:
    if os.environ.get('QGIS_TEST_CHECKPOINT'):
        return os.environ['QGIS_TEST_CHECKPOINT']
    last = REPO / 'work_dirs' / 'demo' / 'last_checkpoint'
    ckpt = REPO / 'work_dirs' / 'demo' / Path(
        last.read_text().strip()).name if last.is_file() else None
    if ckpt is None or not ckpt.is_file():
        pytest.fail('no trained checkpoint: run `make demo` first or set '
                    'QGIS_TEST_CHECKPOINT')
    return str(ckpt)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    probe = subprocess.run([QGIS_PYTHON, '-c', 'import qgis.core'],
                           capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.fail(f'{QGIS_PYTHON} cannot import qgis.core '
                    f'({probe.stderr.strip().splitlines()[-1:]}): '
                    'apt-get install python3-qgis qgis-providers')
    folder = tmp_path_factory.mktemp('geo')
    subprocess.run([
        sys.executable,
        str(REPO / 'tools/dataset_converters/synthetic_to_geotiff.py'),
        str(folder), '--num', '1'
    ],
                   check=True,
                   capture_output=True,
                   text=True,
                   cwd=REPO)
    line = json.loads((folder / 'expressions.jsonl').read_text())
    return folder / line['image'], line['text']


@pytest.mark.parametrize(
    'roi', [None, (16, 8, 112, 120)], ids=['whole', 'roi'])
def test_qgis_places_mask_and_polygons_on_the_image(scene, roi, tmp_path):
    image, text = scene
    out = tmp_path / 'out'
    cmd = [
        sys.executable, 'demo/image_demo.py',
        str(image), text, TINY_CONFIG,
        demo_checkpoint(), '--bands', '3', '2', '1', '--out-dir',
        str(out), '--device', 'cpu'
    ]
    if roi is not None:
        cmd += ['--roi', *map(str, roi), '--roi-crs', 'pixel']
    demo = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    stem = out / image.stem
    assert Path(f'{stem}_mask.qml').is_file()
    OUT.mkdir(parents=True, exist_ok=True)
    shot = OUT / f'qgis_{"roi" if roi else "whole"}.png'
    check = [
        QGIS_PYTHON, '.dev_scripts/qgis_check.py',
        str(image), f'{stem}_mask.tif', f'{stem}_mask.geojson',
        f'{stem}_mask.png', '--screenshot',
        str(shot)
    ]
    if roi is not None:
        check += ['--roi', *map(str, roi)]
    res = subprocess.run(check, cwd=REPO, capture_output=True, text=True)
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'all checks passed' in res.stdout and '[FAIL]' not in res.stdout
    assert shot.is_file()
