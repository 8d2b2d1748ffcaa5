"""rsrefseg_core.web.CacheSweeper: the empty entries of a cache folder go
once older than the age, told by an injected clock (no waiting)."""
import os
import time

import pytest

from rsrefseg_core.web import CacheSweeper

#: Modification time given to the entries (seconds since the epoch).
T0 = 1_000_000.0


class Clock:
    """A clock the test sets: ``clock()`` is ``clock.now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(root, name, kind, mtime=T0):
    """An entry ``name`` under ``root``: 'empty_dir', 'full_dir',
    'empty_file' or 'full_file'."""
    path = root / name
    if kind.endswith('dir'):
        path.mkdir()
        if kind == 'full_dir':
            (path / 'image.png').write_bytes(b'png')
            os.utime(path / 'image.png', (mtime, mtime))
    else:
        path.write_bytes(b'' if kind == 'empty_file' else b'data')
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def cache(tmp_path):
    kinds = ('empty_dir', 'full_dir', 'empty_file', 'full_file')
    for kind in kinds:
        make(tmp_path, kind, kind)
    return tmp_path


def test_nothing_goes_before_the_age(cache):
    clock = Clock(T0 + 60)
    sweeper = CacheSweeper(str(cache), max_age=60, clock=clock)
    assert sweeper.sweep() == 0  # exactly max_age old: kept
    assert sorted(os.listdir(cache)) == [
        'empty_dir', 'empty_file', 'full_dir', 'full_file'
    ]


def test_empty_entries_go_after_the_age_full_ones_stay(cache):
    clock = Clock(T0 + 60.5)
    sweeper = CacheSweeper(str(cache), max_age=60, clock=clock)
    assert sweeper.sweep() == 2
    assert sorted(os.listdir(cache)) == ['full_dir', 'full_file']
    assert (cache / 'full_dir' / 'image.png').read_bytes() == b'png'
    assert sweeper.sweep() == 0


def test_a_folder_emptied_later_goes_an_age_after(cache):
    """Gradio deletes the file of a cache folder: the folder's time is the
    deletion's, and it goes ``max_age`` after that."""
    clock = Clock(T0 + 100)
    sweeper = CacheSweeper(str(cache), max_age=60, clock=clock)
    sweeper.sweep()
    os.remove(cache / 'full_dir' / 'image.png')
    os.utime(cache / 'full_dir', (T0 + 100, T0 + 100))
    clock.now = T0 + 159
    assert sweeper.sweep() == 0
    assert (cache / 'full_dir').is_dir()
    clock.now = T0 + 161
    assert sweeper.sweep() == 1
    assert sorted(os.listdir(cache)) == ['full_file']


def test_only_the_top_level_and_no_links(tmp_path):
    (tmp_path / 'upload').mkdir()
    nested = make(tmp_path / 'upload', 'empty_below', 'empty_dir')
    os.utime(tmp_path / 'upload', (T0, T0))
    target = make(tmp_path, 'target', 'empty_dir', mtime=T0 + 10**6)
    os.symlink(target, tmp_path / 'link')
    os.utime(tmp_path / 'link', (T0, T0), follow_symlinks=False)
    sweeper = CacheSweeper(str(tmp_path), 60, clock=Clock(T0 + 10**5))
    assert sweeper.sweep() == 0
    assert nested.is_dir() and (tmp_path / 'link').is_symlink()
    assert target.is_dir()


def test_real_clock_keeps_what_was_just_made(tmp_path):
    make(tmp_path, 'fresh', 'empty_dir', mtime=time.time())
    make(tmp_path, 'old', 'empty_file', mtime=time.time() - 7200)
    assert CacheSweeper(str(tmp_path), 3600).sweep() == 1
    assert os.listdir(tmp_path) == ['fresh']


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        CacheSweeper(str(tmp_path / 'absent'), 60).sweep()


@pytest.mark.parametrize('age', [0, -5])
def test_age_must_be_positive(tmp_path, age):
    with pytest.raises(ValueError, match='max_age must be > 0'):
        CacheSweeper(str(tmp_path), age)
