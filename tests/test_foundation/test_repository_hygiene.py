"""Whether what the README and docs point at exists: links, paths, make
targets and the components of the README's table."""
import inspect
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

#: Markdown files whose links and paths must resolve.
DOCS = ['README.md', 'configs/rsrefseg/README.md'] + sorted(
    str(p.relative_to(REPO)) for p in (REPO / 'docs').glob('*.md'))


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
