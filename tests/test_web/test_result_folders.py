"""rsrefseg_core.web.ResultFolders: a folder per request, random names, the
last ``keep`` kept."""
import os
import re

import pytest

from rsrefseg_core.web import ResultFolders


def test_two_requests_get_different_unguessable_names(tmp_path):
    folders = ResultFolders(str(tmp_path / 'out'), keep=4)
    first, second = folders.new(), folders.new()
    names = [os.path.basename(first), os.path.basename(second)]
    assert names[0] != names[1]
    for name in names:
        # token_urlsafe(16): 22 characters of the URL-safe alphabet
        assert re.fullmatch(r'[A-Za-z0-9_-]{22}', name), name
        assert not name.isdigit()
    assert os.path.dirname(first) == str(tmp_path / 'out')
    assert sorted(os.listdir(tmp_path / 'out')) == sorted(names)


def test_names_do_not_follow_each_other(tmp_path):
    """Neither counted nor sorted: 50 names share no common prefix and
    come in no order."""
    folders = ResultFolders(str(tmp_path), keep=50)
    names = [os.path.basename(folders.new()) for _ in range(50)]
    assert len(set(names)) == 50
    assert names != sorted(names)
    assert len({n[:4] for n in names}) > 40


def test_only_the_last_keep_folders_stay(tmp_path):
    folders = ResultFolders(str(tmp_path), keep=3)
    made = []
    for i in range(7):
        path = folders.new()
        (tmp_path / path / 'mask.png').write_bytes(b'x' * i)
        made.append(path)
        assert len(os.listdir(tmp_path)) == min(i + 1, 3)
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in made[-3:])
    assert all(not os.path.exists(p) for p in made[:-3])


def test_folders_of_an_earlier_run_go_first(tmp_path):
    old = []
    for i, name in enumerate(['b_old', 'a_older']):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 - i, 1000 - i))
        old.append(name)
    (tmp_path / 'notes.txt').write_text('not a result folder')
    folders = ResultFolders(str(tmp_path), keep=2)
    assert os.path.exists(tmp_path / 'a_older')  # nothing deleted yet
    first = folders.new()
    assert not os.path.exists(tmp_path / 'a_older')  # the oldest first
    assert os.path.exists(tmp_path / 'b_old')
    second = folders.new()
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(first),
         os.path.basename(second), 'notes.txt'])


@pytest.mark.parametrize('keep', [0, -1, 1.5, True])
def test_keep_must_be_a_positive_integer(tmp_path, keep):
    with pytest.raises(ValueError, match='keep must be an integer >= 1'):
        ResultFolders(str(tmp_path), keep)
