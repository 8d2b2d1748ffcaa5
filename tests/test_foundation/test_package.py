"""Import, registration and version checks of the rsrefseg_mm package;
importing it changes nothing of mmengine's checkpoint loading or Runner."""
import json
import subprocess
import sys
import textwrap

import pytest
from mmseg.registry import (DATASETS, HOOKS, METRICS, MODELS,
                            OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                            RUNNERS, TRANSFORMS, VISUALIZERS)

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
    HOOKS: ['ReferringVisualizationHook', 'CompileHotPathsHook'],
    OPTIM_WRAPPERS:
    ['SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper'],
    OPTIM_WRAPPER_CONSTRUCTORS: ['TrainableParamsOptimWrapperConstructor'],
    RUNNERS: ['RSRefSegRunner'],
}


@pytest.mark.parametrize('registry,name', [(r, n)
                                           for r, names in ADVERTISED.items()
                                           for n in names])
def test_type_registered_in_mmseg(registry, name):
    assert registry.get(name) is not None, f'{name} not in {registry.name}'
    # registered in mmseg's own registry, not only in a child
    assert name in registry.module_dict, f'{name} not in {registry.name}'


def accepts(name: str, version: str, minimum: str, maximum) -> bool:
    """Whether :func:`rsrefseg_mm.check_version` lets ``version`` pass; a
    refusal must name the package, the bounds and the way out."""
    try:
        rsrefseg_mm.check_version(name, version, minimum, maximum)
    except AssertionError as e:
        bounds = f'{minimum} <= {name}' + (f' < {maximum}' if maximum else '')
        assert f'needs {bounds}, but {name}=={version} is installed' in \
            str(e)
        assert 'make install' in str(e)
        return False
    return True


@pytest.mark.parametrize(
    'version,accepted',
    [
        ('2.0.0rc4', True),  # the minimum is supported
        ('2.1.0', True),
        ('2.1.99', True),
        ('2.2.0', False),  # the maximum is the first unsupported one
        ('2.0.0rc3', False),
        ('1.7.1', False),
    ])
def test_mmcv_range(version, accepted):
    assert accepts('mmcv', version, rsrefseg_mm.MMCV_MIN,
                   rsrefseg_mm.MMCV_MAX) is accepted


def test_installed_versions_are_in_range():
    """What `import rsrefseg_mm` checked: the environment's versions."""
    import mmcv
    import mmengine
    import mmseg
    import torch
    m = rsrefseg_mm
    for name, version, low, high in [
        ('torch', torch.__version__, m.TORCH_MIN, m.TORCH_MAX),
        ('mmcv', mmcv.__version__, m.MMCV_MIN, m.MMCV_MAX),
        ('mmengine', mmengine.__version__, m.MMENGINE_MIN, m.MMENGINE_MAX),
        ('mmsegmentation', mmseg.__version__, m.MMSEG_MIN, m.MMSEG_MAX),
    ]:
        assert accepts(name, version, low, high), (name, version)


@pytest.mark.parametrize(
    'version,accepted',
    [
        ('2.14.1+cu130', True),  # local version labels are read
        ('2.6.0', True),
        ('9.0.0', True),  # no upper bound
        # torch < 2.6 loads with weights_only=False by default
        ('2.5.1', False),
        ('2.6.0rc1', False),
    ])
def test_torch_needs_weights_only_default(version, accepted):
    assert accepts('torch', version, rsrefseg_mm.TORCH_MIN,
                   rsrefseg_mm.TORCH_MAX) is accepted


# mmengine's loader schemes, Runner attributes, torch's allow-list and the
# environment, before and after `import rsrefseg_mm` (and its engine and
# tools' imports), in a fresh interpreter
GLOBAL_STATE = textwrap.dedent('''
    import json, os, sys
    import torch
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import CheckpointLoader

    def state():
        return dict(
            schemes={p: f'{f.__module__}.{f.__qualname__}'
                     for p, f in CheckpointLoader._schemes.items()},
            runner={k: repr(v) for k, v in vars(Runner).items()},
            environ=dict(os.environ))

    before = state()
    import rsrefseg_mm
    from rsrefseg_mm.engine import RSRefSegRunner
    from rsrefseg_mm.apis import init_referring_model
    from rsrefseg_mm.utils import runner_safe_globals
    # torch adds its own entries as its modules load; none of ours
    ours = set(runner_safe_globals())
    allowed = [str(g) for g in torch.serialization.get_safe_globals()
               if g in ours]
    json.dump(dict(before=before, after=state(), allowed=allowed),
              sys.stdout)
''')


def test_import_changes_only_the_checkpoint_loaders():
    """Importing rsrefseg_mm routes mmengine's local checkpoint loader
    through the safe one and refuses every remote scheme mmengine
    registers; mmengine's Runner, torch's allow-list and the environment
    stay as shipped."""
    proc = subprocess.run([sys.executable, '-c', GLOBAL_STATE],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    before, after = out['before'], out['after']
    assert before['schemes'][''] == \
        'mmengine.runner.checkpoint.load_from_local'
    ours = 'rsrefseg_mm.utils.checkpoint.'
    assert after['schemes'] == {
        prefix: ours + ('load_from_local_safely'
                        if prefix == '' else 'load_from_remote_refused')
        for prefix in before['schemes']
    }
    for key in ('runner', 'environ'):
        assert after[key] == before[key], key
    assert out['allowed'] == []


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
    ('train.py', [
        '--work-dir', '--cfg-options', '--resume', '--amp', '--launcher',
        '--unsafe-load', '--compile'
    ]),
    ('test.py', [
        'checkpoint', '--work-dir', '--out', '--show', '--show-dir', '--tta',
        '--cfg-options', '--launcher', '--unsafe-load', '--compile'
    ]),
])
def test_tools_help(tool, options):
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / tool), '-h'],
        capture_output=True,
        text=True,
        cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for opt in options:
        assert opt in proc.stdout, f'{opt} missing from {tool} --help'
