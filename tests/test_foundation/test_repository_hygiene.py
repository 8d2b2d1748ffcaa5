"""Properties of the repository as a whole: module sizes, what the files
talk about, and whether what the README and docs point at exists."""
import inspect
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

#: Folders and files whose text is the project's own (code, configs, docs).
PROJECT_PATHS = ('rsrefseg_core', 'rsrefseg_mm', 'rsrefseg_deploy', 'tools',
                 'tests', 'docs', 'configs', 'demo', 'scripts', 'README.md',
                 'Makefile', 'setup.py', 'setup.cfg')
#: Packages and tools: one concept per module, at most this many lines.
MAX_MODULE_LINES = 400
# written in pieces so that this file does not match itself
FORBIDDEN = {
    'package index host':
    r'pypi' + r'\.org|pythonhosted' + r'\.org|download\.openmmlab' + r'\.com',
    'outside document':
    r'\bdesign' + r'\.md\b',
    'issue number':
    r'issue' + r' [0-9]',
    'borrowed machine':
    r'lent' + r' (gpu|machine)',
    'the machine it was built on':
    r'this' + r' 2-core',
}
#: Markdown files whose links and paths must resolve.
DOCS = ['README.md', 'configs/rsrefseg/README.md'] + sorted(
    str(p.relative_to(REPO)) for p in (REPO / 'docs').glob('*.md'))


def tracked(*paths: str):
    """Tracked files under ``paths`` (relative path strings)."""
    out = subprocess.run(['git', 'ls-files', '-z', '--', *paths],
                         cwd=REPO,
                         capture_output=True,
                         check=True).stdout
    return [n for n in out.decode().split('\0') if n and (REPO / n).is_file()]


def git_grep(pattern: str):
    """``git grep -n -i -E pattern`` over :data:`PROJECT_PATHS`."""
    proc = subprocess.run(
        ['git', 'grep', '-n', '-i', '-E', pattern, '--', *PROJECT_PATHS],
        cwd=REPO,
        capture_output=True,
        text=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: no match
    return proc.stdout.splitlines()


@pytest.mark.parametrize('what', FORBIDDEN)
def test_project_files_do_not_mention(what):
    hits = git_grep(FORBIDDEN[what])
    assert not hits, '\n'.join(hits)


@pytest.mark.parametrize('what', FORBIDDEN)
def test_forbidden_patterns_match_what_they_should(what):
    """Guard against a pattern that can never match."""
    sample = {
        'package index host': 'https://pypi' + '.org/simple',
        'outside document': 'see design' + '.md section 7',
        'issue number': 'as measured in issue' + ' 11',
        'borrowed machine': 'on a lent' + ' GPU machine',
        'the machine it was built on': 'measured on this' + ' 2-core CPU',
    }[what]
    assert re.search(FORBIDDEN[what], sample, re.IGNORECASE)


def test_modules_stay_small():
    sizes = {
        name: len((REPO / name).read_text().splitlines())
        for name in tracked('rsrefseg_core', 'rsrefseg_mm', 'rsrefseg_deploy',
                            'tools') if name.endswith('.py')
    }
    assert len(sizes) > 50  # the package and the tools were found
    too_long = {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES}
    assert not too_long, too_long


def make_targets_named_in(text: str):
    return set(re.findall(r'`make ([a-z][\w-]*)', text))


def test_make_targets_in_readme_and_docs_exist():
    named = set()
    for doc in DOCS:
        named |= make_targets_named_in((REPO / doc).read_text())
    assert {'demo', 'test', 'lint'} <= named
    for target in sorted(named):
        # -n: print what would run, run nothing
        proc = subprocess.run(['make', '-n', target],
                              cwd=REPO,
                              capture_output=True,
                              text=True)
        assert proc.returncode == 0, (target, proc.stderr)


@pytest.mark.parametrize('doc', DOCS)
def test_links_and_paths_in_docs_exist(doc):
    text = (REPO / doc).read_text()
    base = (REPO / doc).parent
    missing = []
    for link in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:|#', link):  # web page or anchor
            continue
        if not (base / link.split('#')[0]).exists():
            missing.append(link)
    # repository paths in code spans, e.g. `tools/analysis_tools/x.py`
    roots = '|'.join(('rsrefseg_core', 'rsrefseg_mm', 'rsrefseg_deploy',
                      'tools', 'configs', 'demo', 'scripts', 'docs', 'tests'))
    for path in re.findall(rf'`((?:{roots})/[\w./-]*)', text):
        if not (REPO / path).exists():
            missing.append(path)
    assert not missing, missing


def registered_classes():
    """``(registry, name, class)`` of every class rsrefseg_mm registers."""
    import mmseg.registry as registries

    import rsrefseg_mm  # noqa: F401
    for reg_name in dir(registries):
        registry = getattr(registries, reg_name)
        for name, obj in getattr(registry, 'module_dict', {}).items():
            if inspect.isclass(obj) and \
                    obj.__module__.startswith('rsrefseg_mm'):
                yield reg_name, name, obj


def test_readme_maps_every_registered_name_to_its_file():
    """One step from a config's ``type`` to the file that defines it."""
    lines = (REPO / 'README.md').read_text().splitlines()
    found = list(registered_classes())
    assert len(found) > 15
    missing = []
    for registry, name, cls in found:
        path = Path(inspect.getsourcefile(cls)).resolve().relative_to(REPO)
        if not any(f'`{name}`' in line and f'`{path}`' in line
                   and registry in line for line in lines):
            missing.append(f'{registry} {name} {path}')
    assert not missing, '\n'.join(missing)
