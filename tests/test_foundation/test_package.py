"""Import, registration and version checks of the rsrefseg_mm package."""
import subprocess
import sys

import pytest
from mmseg.registry import (DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPERS,
                            TRANSFORMS, VISUALIZERS)

import rsrefseg_mm

from helpers import REPO


ADVERTISED = {
    MODELS: ['RSRefSeg', 'CLIPBackbone', 'TextFilterNeck', 'SAMPromptHead'],
    DATASETS: [
        'RRSISDDataset', 'SyntheticReferringDataset', 'RefSegRSDataset',
        'RISBenchDataset'
    ],
    TRANSFORMS: ['LoadReferringAnnotations', 'PackReferringInputs'],
    METRICS: ['ReferringIoUMetric'],
    VISUALIZERS: ['ReferringVisualizer'],
    HOOKS: ['ReferringVisualizationHook'],
    OPTIM_WRAPPERS: ['AnyDeviceAmpOptimWrapper'],
}


@pytest.mark.parametrize(
    'registry,name', [(r, n) for r, names in ADVERTISED.items()
                      for n in names])
def test_type_registered_in_mmseg(registry, name):
    assert registry.get(name) is not None, f'{name} not in {registry.name}'
    # registered in mmseg's own registry, not only in a child
    assert name in registry.module_dict, f'{name} not in {registry.name}'


def test_version_check_accepts_installed():
    import mmcv
    rsrefseg_mm.check_version('mmcv', mmcv.__version__, rsrefseg_mm.MMCV_MIN,
                              rsrefseg_mm.MMCV_MAX)


@pytest.mark.parametrize('version', ['2.2.0', '1.7.1', '2.0.0rc3'])
def test_version_check_rejects_unsupported(version):
    with pytest.raises(AssertionError, match=r'mmcv==' + version):
        rsrefseg_mm.check_version('mmcv', version, rsrefseg_mm.MMCV_MIN,
                                  rsrefseg_mm.MMCV_MAX)


def test_import_fails_clearly_with_wrong_mmseg(tmp_path):
    """A fake mmseg 1.0.0 on the path makes `import rsrefseg_mm` fail with
    our message, not with an obscure error deeper down."""
    fake = tmp_path / 'mmseg'
    fake.mkdir()
    (fake / '__init__.py').write_text("__version__ = '1.0.0'\n")
    code = 'import rsrefseg_mm'
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO,
                          env={'PYTHONPATH': str(tmp_path)},
                          capture_output=True,
                          text=True)
    assert proc.returncode != 0
    assert 'mmsegmentation==1.0.0' in proc.stderr
    assert 'make install' in proc.stderr


@pytest.mark.parametrize('tool,options', [
    ('train.py', ['--work-dir', '--cfg-options', '--resume', '--amp',
                  '--launcher', '--unsafe-load']),
    ('test.py', ['checkpoint', '--work-dir', '--out', '--show', '--show-dir',
                 '--tta', '--cfg-options', '--launcher', '--unsafe-load']),
])
def test_tools_help(tool, options):
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / tool), '-h'],
                          capture_output=True,
                          text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for opt in options:
        assert opt in proc.stdout, f'{opt} missing from {tool} --help'
