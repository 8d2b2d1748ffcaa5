"""What setup.py installs against what the README, the docs and the
messages in the code tell users to install."""
import re
import runpy
import setuptools
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO, load_script

#: Where users read install commands: the docs and the code's messages
#: (tests excluded: they are no instructions).
SOURCES = ('README.md', 'docs', 'configs', 'requirements', 'rsrefseg_core',
           'rsrefseg_mm', 'rsrefseg_deploy', 'tools', 'demo', 'scripts',
           'Makefile', 'setup.py', 'requirements.txt')
#: ``".[geo,web]"``, ``.[export]``: the extras of a ``pip install`` of the
#: project (after a quote or a space, so a Markdown link is no match).
EXTRAS = re.compile(r'(?<=[\s"\'])\.\[([A-Za-z][\w-]*(?:\s*,\s*[\w-]+)*)\]')
#: ``requirements/deploy.txt`` and the like.
REQUIREMENT_FILE = re.compile(r'\brequirements/[\w.-]+\.txt\b')
#: Installed packages (``find_packages`` finds them by ``__init__.py``).
PACKAGES = ('rsrefseg_core', 'rsrefseg_mm', 'rsrefseg_deploy')


def setup_kwargs() -> dict:
    """The keyword arguments setup.py passes to ``setuptools.setup``."""
    captured = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(setuptools, 'setup', lambda **kw: captured.update(kw))
        runpy.run_path(str(REPO / 'setup.py'), run_name='__main__')
    assert captured, 'setup.py did not call setuptools.setup'
    return captured


def texts():
    """``(path, text)`` of the tracked files in :data:`SOURCES`."""
    out = subprocess.run(['git', 'ls-files', '-z', '--', *SOURCES],
                         cwd=REPO,
                         capture_output=True,
                         check=True).stdout.decode()
    for name in out.split('\0'):
        path = REPO / name
        if name and path.is_file() and path.suffix in ('.md', '.py', '.txt',
                                                       '.sh', ''):
            yield name, path.read_text(encoding='utf-8')


def named_extras():
    """``{extra: [files naming it]}`` over :func:`texts`."""
    named = {}
    for name, text in texts():
        for group in EXTRAS.findall(text):
            for extra in re.split(r'\s*,\s*', group.strip()):
                named.setdefault(extra, []).append(name)
    return named


def test_extras_pattern_matches_install_commands_only():
    found = EXTRAS.findall('pip install -e ".[geo,web]" or pip install '
                           "'.[export]' or pip install .[tests] "
                           'see [the docs](docs/x.md).[not](an/extra)')
    assert found == ['geo,web', 'export', 'tests']


def test_every_extra_named_to_users_exists():
    extras = setup_kwargs()['extras_require']
    named = named_extras()
    # the scan reads the docs and the messages: these are named there
    assert {'geo', 'web', 'export'} <= set(named), named
    missing = {e: files for e, files in named.items() if e not in extras}
    assert not missing, f'extras not in setup.py: {missing}'


def test_every_requirement_file_named_exists():
    named = {}
    for name, text in texts():
        for path in REQUIREMENT_FILE.findall(text):
            named.setdefault(path, []).append(name)
    assert {'requirements/deploy.txt', 'requirements/mminstall.txt'
            } <= set(named), named
    missing = {
        p: files
        for p, files in named.items() if not (REPO / p).is_file()
    }
    assert not missing, missing


def read_requirements(path: Path) -> list:
    """The requirements of a file, comments dropped, ``-r`` followed."""
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split('#')[0].strip()
        if line.startswith('-r '):
            reqs += read_requirements(path.parent / line[3:].strip())
        elif line:
            reqs.append(line)
    return reqs


def test_each_extra_installs_its_requirement_file():
    kwargs = setup_kwargs()
    extras = kwargs['extras_require']
    req = {
        name: read_requirements(REPO / 'requirements' / f'{name}.txt')
        for name in ('geo', 'web', 'export', 'tests', 'runtime', 'mminstall')
    }
    assert set(extras) == {'geo', 'web', 'export', 'tests', 'all'}
    for extra in ('geo', 'web', 'export', 'tests'):
        assert extras[extra] == req[extra], extra
    # tests.txt includes export.txt: followed, not handed to pip as '-r'
    assert set(req['export']) <= set(extras['tests'])
    assert not any(r.startswith('-') for e in extras.values() for r in e)
    # all: every optional feature, each requirement once
    features = req['geo'] + req['web'] + req['export']
    assert extras['all'] == list(dict.fromkeys(features))
    assert kwargs['install_requires'] == req['runtime'] + req['mminstall']


def test_export_without_onnx_names_the_extra(monkeypatch, tmp_path):
    export = load_script('tools/deployment/export_onnx.py')
    monkeypatch.setitem(sys.modules, 'onnx', None)  # import fails
    with pytest.raises(
            ImportError, match=re.escape('pip install -e ".[export]"')):
        export.main(['cfg.py', 'ckpt.pth', '--out-dir', str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_packages_are_the_three_packages_with_every_subpackage():
    """``pip install --no-deps .`` (the ONNX Runtime install) gets
    rsrefseg_core beside rsrefseg_deploy; no tests, tools or configs."""
    packages = set(setup_kwargs()['packages'])
    on_disk = {
        '.'.join(init.parent.relative_to(REPO).parts)
        for root in PACKAGES for init in (REPO / root).rglob('__init__.py')
    }
    assert {
        'rsrefseg_core', 'rsrefseg_core.geo', 'rsrefseg_core.tokenizers',
        'rsrefseg_deploy'
    } <= on_disk
    assert packages == on_disk


def test_wheel_holds_the_packages_license_and_extras(tmp_path):
    """A wheel built from the tracked files: every module of the three
    packages, the license and the extras in its metadata."""
    out = subprocess.run(['git', 'ls-files', '-z'],
                         cwd=REPO,
                         capture_output=True,
                         check=True).stdout.decode()
    src = tmp_path / 'src'
    modules = set()
    for name in out.split('\0'):
        first = name.split('/')[0]
        if not (REPO / name).is_file() or first not in (
                *PACKAGES, 'requirements', 'setup.py', 'README.md', 'LICENSE'):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((REPO / name).read_bytes())
        if name.endswith('.py') and first in PACKAGES:
            modules.add(name)
    proc = subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '-q', '-w',
        str(tmp_path / 'dist'),
        str(src)
    ],
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel, = (tmp_path / 'dist').glob('rsrefseg_mm-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name, = (n for n in names if n.endswith('.dist-info/METADATA'))
        meta = zf.read(meta_name).decode()
        license_name, = (
            n for n in names if n.endswith('LICENSE') and '.dist-info/' in n)
        license_text = zf.read(license_name).decode()
    assert 'rsrefseg_core/geo/reader.py' in modules
    assert modules <= names, sorted(modules - names)[:10]
    assert not any(
        n.startswith(('tests/', 'tools/', 'configs/', 'demo/')) for n in names)
    assert 'Apache License' in license_text and \
        'Version 2.0, January 2004' in license_text
    provides = set(re.findall(r'^Provides-Extra: (\S+)$', meta, re.M))
    assert provides == {'geo', 'web', 'export', 'tests', 'all'}
    assert 'Requires-Dist: rasterio>=1.3; extra == "geo"' in meta
