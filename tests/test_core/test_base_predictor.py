"""rsrefseg_core.predictor.BaseReferringPredictor: the image / expression
flow both runtimes share (argument checks, cache keys, expression checks,
batches and padding), on a fake engine; and rsrefseg_core's predictor
modules import without torch."""
import subprocess
import sys

import numpy as np
import pytest

from rsrefseg_core.geo import read_image
from rsrefseg_core.lru_cache import LRUCache
from rsrefseg_core.predictor import (BaseReferringPredictor,
                                     resolve_max_read_size)
from helpers import REPO, write_geotiff

#: Expressions every runtime refuses (empty once the tokenizers clean them).
BAD_EXPRESSIONS = [
    '', '   ', '...', '&nbsp;', '&amp;#32;', '\u00a0\u00a0', '?!', None, 3
]


class FakePredictor(BaseReferringPredictor):
    """Encodes to the image's shape, decodes to ``text@shape``."""

    def __init__(self, **kwargs):
        self.encodes = []
        self.decodes = []
        super().__init__(**kwargs)

    def _encode(self, raster):
        self.encodes.append(raster.img.shape)
        return raster.img.shape

    def _decode(self, texts, count):
        self.decodes.append(list(texts))
        return [f'{text}@{self.encoded[:2]}' for text in texts[:count]]


@pytest.fixture
def photo():
    return np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)


@pytest.mark.parametrize('kwargs, match', [
    (dict(max_batch=0), 'max_batch'),
    (dict(max_batch=True), 'max_batch'),
    (dict(max_batch=1.5), 'max_batch'),
    (dict(cache_size=-1), 'cache_size'),
    (dict(cache_size=1.5), 'cache_size'),
    (dict(cache_size=True), 'cache_size'),
    (dict(max_read_size=0), 'max_read_size'),
    (dict(max_read_size=-5), 'max_read_size'),
    (dict(max_read_size=512.0), 'max_read_size'),
    (dict(max_read_size=True), 'max_read_size'),
    (dict(max_read_size='big'), 'max_read_size'),
    (dict(max_read_size='auto'), 'auto_read_size'),
    (dict(batch_size=0), 'max_batch'),
])
def test_argument_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FakePredictor(**kwargs)


def test_max_read_size_resolution():
    assert FakePredictor(max_read_size=None).max_read_size is None
    assert FakePredictor(max_read_size=300).max_read_size == 300
    assert FakePredictor(
        max_read_size='auto', auto_read_size=256).max_read_size == 256
    assert FakePredictor(
        max_read_size='auto', auto_read_size=lambda: 512).max_read_size == 512
    assert FakePredictor(max_read_size=np.int64(64)).max_read_size == 64

    def never():
        raise AssertionError('auto is resolved only for "auto"')

    assert resolve_max_read_size(128, never) == 128


def test_set_image_predict_reset(photo):
    p = FakePredictor(max_batch=2)
    assert not p.is_image_set and p.image is None and not p.from_cache
    with pytest.raises(
            RuntimeError, match=r'FakePredictor\.predict: call set_image'):
        p.predict('the red circle')
    raster = p.set_image(photo)
    assert p.is_image_set and p.image is raster and not p.from_cache
    assert p.encoded == (40, 50, 3)
    assert p.predict('the red circle') == 'the red circle@(40, 50)'
    assert isinstance(p.cache, LRUCache) and len(p.cache) == 0  # size 0
    p.reset_image()
    assert not p.is_image_set and p.image is None and p.encoded is None


def test_batches_of_max_batch(photo):
    p = FakePredictor(max_batch=2)
    p.set_image(photo)
    texts = ['a', 'b', 'c', 'd', 'e']
    out = p.predict(texts)
    assert out == [f'{t}@(40, 50)' for t in texts]
    assert p.decodes == [['a', 'b'], ['c', 'd'], ['e']]
    assert p.predict(('f', )) == ['f@(40, 50)']  # a sequence: a list


def test_fixed_batch_is_padded_with_the_last_expression(photo):
    p = FakePredictor(max_batch=8, batch_size=3)
    assert p.batch == 3
    p.set_image(photo)
    out = p.predict(['a', 'b', 'c', 'd', 'e'])
    assert out == [f'{t}@(40, 50)' for t in 'abcde']
    assert p.decodes == [['a', 'b', 'c'], ['d', 'e', 'e']]
    p.decodes.clear()
    assert p.predict('x') == 'x@(40, 50)'
    assert p.decodes == [['x', 'x', 'x']]


def test_decode_returning_a_wrong_count_is_an_error(photo):

    class Broken(FakePredictor):

        def _decode(self, texts, count):
            return list(texts)  # padding included

    p = Broken(batch_size=4)
    p.set_image(photo)
    with pytest.raises(RuntimeError, match='4 results for 1 expressions'):
        p.predict('a')


@pytest.mark.parametrize('bad', BAD_EXPRESSIONS)
def test_bad_expressions_are_refused_before_decoding(photo, bad):
    p = FakePredictor()
    p.set_image(photo)
    with pytest.raises(ValueError, match='^expression 1: the expression'):
        p.predict(['the red circle', bad])
    assert p.decodes == []


def test_no_expression(photo):
    p = FakePredictor()
    p.set_image(photo)
    with pytest.raises(ValueError, match='FakePredictor.predict: no expr'):
        p.predict([])


def test_cache_hit_on_content_miss_on_reading_arguments(photo):
    p = FakePredictor(cache_size=8)
    p.set_image(photo)
    p.set_image(photo.copy())  # same content, another array
    assert p.from_cache and len(p.encodes) == 1
    first = p.image
    for kwargs in (dict(bands=(3, 2, 1)), dict(stretch=(1, 99)),
                   dict(roi=(0, 0, 20, 20))):
        p.set_image(photo, **kwargs)
        assert not p.from_cache, kwargs
    assert len(p.encodes) == 4
    p.set_image(photo, bands=(3, 2, 1))  # each is kept under its own key
    assert p.from_cache and len(p.encodes) == 4
    p.set_image(photo)
    assert p.from_cache and p.image is first
    # the key holds a digest, not the array
    assert all(isinstance(key[0], str) for key in p.cache)


def test_cache_key_includes_max_read_size(tmp_path):
    tif = write_geotiff(tmp_path / 'scene.tif')
    p = FakePredictor(cache_size=4, max_read_size=None)
    full = p.set_image(tif, bands=(3, 2, 1))
    assert full.img.shape[:2] == (90, 120)
    p.max_read_size = 60  # the same file read coarser: another image
    key_60 = p.cache_key(tif, (3, 2, 1))
    small = p.set_image(tif, bands=(3, 2, 1))
    assert not p.from_cache and small.img.shape[:2] == (45, 60)
    assert p.encodes == [(90, 120, 3), (45, 60, 3)]
    p.max_read_size = None
    assert p.set_image(tif, bands=(3, 2, 1)) is full and p.from_cache
    assert p.cache_key(tif, (3, 2, 1)) != key_60
    # another predictor with the same arguments computes the same key
    other = FakePredictor(max_read_size=60)
    assert other.cache_key(tif, (3, 2, 1)) == key_60


def test_least_recently_used_is_dropped(photo):
    p = FakePredictor(cache_size=2)
    a, b, c = photo, photo[::-1].copy(), photo[:, ::-1].copy()
    p.set_image(a)
    p.set_image(b)
    p.set_image(a)  # a is now the most recent
    p.set_image(c)  # drops b
    assert len(p.cache) == 2 and len(p.encodes) == 3
    p.set_image(a)
    assert p.from_cache
    p.set_image(b)
    assert not p.from_cache and len(p.encodes) == 4


def test_an_image_already_read_is_not_cached(tmp_path):
    raster = read_image(write_geotiff(tmp_path / 'scene.tif'), (3, 2, 1))
    p = FakePredictor(cache_size=2)
    assert p.set_image(raster) is raster
    p.set_image(raster)
    assert not p.from_cache and len(p.encodes) == 2 and len(p.cache) == 0


BLOCKER = '''
import importlib.abc
import sys

BLOCKED = ('torch', 'mmcv', 'mmengine', 'mmseg', 'mmpretrain',
           'rsrefseg_mm')


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'blocked: {name}')


sys.meta_path.insert(0, Block())
import rsrefseg_core.lru_cache
import rsrefseg_core.predictor
import rsrefseg_core.text
from rsrefseg_core.text import check_expression
check_expression('the red circle', 'x')
print('TORCH_FREE_OK')
'''


def test_core_modules_import_without_torch():
    proc = subprocess.run([sys.executable, '-c', BLOCKER],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'TORCH_FREE_OK' in proc.stdout
