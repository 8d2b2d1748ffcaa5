"""No file names a package index host or cites a document outside the
repository; the install script fetches mmcv through pip with a checksum."""
import re
import subprocess

import pytest

from helpers import REPO

# written in pieces so that this file does not match itself
FORBIDDEN = [
    re.compile(r'pypi' + r'\.org'),
    re.compile(r'pythonhosted' + r'\.org'),
    re.compile(r'download\.openmmlab' + r'\.com'),
    re.compile(r'\bdesign' + r'\.md\b'),
]


def tracked_text_files():
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO,
                         capture_output=True, check=True).stdout
    for name in out.decode().split('\0'):
        path = REPO / name
        if name and path.is_file():
            data = path.read_bytes()
            if b'\0' not in data:  # text only
                yield name, data.decode('utf-8', errors='replace')


def test_no_index_hosts_or_outside_documents():
    hits = [
        f'{name}:{n}: {line.strip()[:80]}'
        for name, text in tracked_text_files()
        for n, line in enumerate(text.splitlines(), 1)
        if any(p.search(line) for p in FORBIDDEN)
    ]
    assert not hits, '\n'.join(hits)


def test_mmcv_sdist_comes_through_pip_with_a_checksum():
    script = (REPO / 'scripts' / 'install_env.sh').read_text()
    # "${PIP[@]}" download ... (pip of the venv, so its index settings apply)
    assert re.search(r'PIP\[@\]}" download [^\n]*--no-binary :all: --no-deps',
                     script)
    assert re.search(r'MMCV_SHA256=[0-9a-f]{64}', script)
    assert 'sha256sum -c' in script


@pytest.mark.parametrize('pattern', FORBIDDEN, ids=lambda p: p.pattern)
def test_patterns_match_what_they_should(pattern):
    """Guard against a pattern that can never match."""
    sample = {0: 'https://pypi' + '.org/simple', 1: 'files.pythonhosted' +
              '.org/x', 2: 'https://download.openmmlab' + '.com/mmcv',
              3: 'see design' + '.md section 7'}
    assert any(pattern.search(s) for s in sample.values())
