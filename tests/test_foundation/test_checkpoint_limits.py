"""Small files that would make the loader allocate gigabytes are refused by
name before anything of them is unpickled, with a small peak-RSS increase.

Each crafted file is a real ``torch.save`` zip (or legacy) file: its honest
small twin loads through the same loader and gives the object the
crafted one asks for at a huge size. The huge ones are loaded in a child
process (``import rsrefseg_mm`` alone peaks at about 1 GB) whose address
space is capped at its size after the imports plus 1 GiB; the peak RSS of
each load is measured from a reset of the kernel's high-water mark.
"""
import codecs
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pytest
import torch
from torch._utils import (_rebuild_device_tensor_from_cpu_tensor,
                          _rebuild_tensor_v2)

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import RSRefSegRunner
from rsrefseg_mm.models.backbones.clip.clip_checkpoint import load_clip_file
from rsrefseg_mm.utils import (CheckpointLimitError, CorruptCheckpointError,
                               allow_unsafe_load, checkpoint_limits,
                               safe_torch_load)
from rsrefseg_mm.utils.checkpoint_limits import (MAX_PICKLE_BYTES,
                                                 check_checkpoint_size,
                                                 format_bytes)
from helpers import REPO

GIB = 2**30
#: The size the crafted files ask for (what the review allocated).
HUGE = 3_000_000_000
#: Allowed peak-RSS increase of one refused load, MiB.
RSS_LIMIT_MB = 64


class Storage:
    """A storage record named by a persistent id (``key``, ``numel``
    elements of ``storage_type``)."""

    def __init__(self,
                 key: str,
                 numel: int,
                 storage_type: Any = torch.UntypedStorage) -> None:
        self.key, self.numel, self.storage_type = key, numel, storage_type


class Call:
    """Pickled as ``func(*args)`` (GLOBAL + REDUCE): nothing is built
    when the file is written."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def tensor(storage: Storage,
           size: Tuple[int, ...],
           stride: Optional[Tuple[int, ...]] = None) -> Call:
    """A tensor as torch.save pickles it: a view of ``storage``."""
    if stride is None:
        stride = tuple(
            int(np.prod(size[i + 1:], dtype=np.int64))
            for i in range(len(size)))
    return Call(_rebuild_tensor_v2, storage, 0, size, stride, False,
                OrderedDict())


class _Pickler(pickle.Pickler):

    def __init__(self, file: Any, legacy: bool = False) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj: Any) -> Optional[tuple]:
        if isinstance(obj, Storage):
            pid = ('storage', obj.storage_type, obj.key, 'cpu', obj.numel)
            return pid + (None, ) if self.legacy else pid
        return None


def dumps(obj: Any, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


def write_zip(path: Path,
              obj: Any,
              records: Optional[Dict[str, int]] = None,
              compress: int = zipfile.ZIP_STORED,
              pickle_bytes: Optional[bytes] = None) -> str:
    """A torch.save zip: ``data.pkl`` (``obj``, or raw ``pickle_bytes``)
    and zero-filled records ``data/<key>`` of the given sizes, streamed
    (a deflated record of gigabytes costs no memory here)."""
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('archive/data.pkl', pickle_bytes or dumps(obj))
        archive.writestr('archive/byteorder', 'little')
        for key, nbytes in (records or {}).items():
            info = zipfile.ZipInfo(f'archive/data/{key}')
            info.compress_type = compress
            with archive.open(info, 'w', force_zip64=True) as f:
                chunk = bytes(2**24)
                for start in range(0, nbytes, len(chunk)):
                    f.write(chunk[:nbytes - start])
        archive.writestr('archive/version', '3\n')
    return str(path)


def write_legacy(path: Path, obj: Any, storages: Dict[str, bytes],
                 itemsize: int) -> str:
    """A ``_use_new_zipfile_serialization=False`` file: magic number,
    protocol, system info, the object, its storage keys, then each
    storage raw (element count, bytes)."""
    with open(path, 'wb') as f:
        for header in (torch.serialization.MAGIC_NUMBER,
                       torch.serialization.PROTOCOL_VERSION,
                       dict(
                           protocol_version=1001,
                           little_endian=True,
                           type_sizes=dict(short=2, int=4, long=4))):
            pickle.dump(header, f, protocol=2)
        f.write(dumps(obj, legacy=True))
        pickle.dump(list(storages), f, protocol=2)
        for data in storages.values():
            f.write(struct.pack('<q', len(data) // itemsize))
            f.write(data)
    return str(path)


def _hex_chain(times: int) -> Call:
    value = Call(codecs.encode, 'abcdefgh', 'latin1')
    for _ in range(times):
        value = Call(codecs.encode, value, 'hex')
    return value


def _deep_sets(count: int) -> bytes:
    """``{'meta': (set(), set(), ...)}``: one byte per empty set."""
    return (b'\x80\x02}X\x04\x00\x00\x00meta(' + b'\x8f' * count + b'ts.')


def _tuples(count: int) -> bytes:
    """``{'meta': ((None,), (None,), ...)}``: two bytes per tuple."""
    return (b'\x80\x02}X\x04\x00\x00\x00meta(' + b'N\x85' * count + b'ts.')


def _memo_index() -> bytes:
    """A pickle that puts its first object at memo index 2**31 - 1 (a C
    unpickler would size its memo array to that), then is cut."""
    return b'\x80\x02K\x01r' + struct.pack('<I', 2**31 - 1) + b'\x00garbage'


#: name -> (make(folder, size) -> path, honest size, huge size, fragment of
#: the refusal, what the honest file loads as (checked by ``check``)).
ATTACKS = {
    'bytearray(n) in meta': (lambda d, n: write_zip(d / 'bytearray.pth', {
        'meta': Call(bytearray, n),
        'state_dict': {}
    }), 1000, HUGE, 'builtins.bytearray(3000000000)',
                             lambda obj, n: len(obj['meta']) == n),
    'hex codec chain':
    (lambda d, n: write_zip(d / 'hex.pth', {'meta': _hex_chain(n)}), 0, 28,
     "codec 'hex'", lambda obj, n: obj['meta'] == b'abcdefgh'),
    'torch.UntypedStorage(n)':
    (lambda d, n: write_zip(d / 'storage.pth',
                            {'meta': Call(torch.UntypedStorage, n)}), 1000,
     HUGE, 'torch.storage.UntypedStorage(3000000000)',
     lambda obj, n: obj['meta'].nbytes() == n),
    'torch.FloatTensor(n)':
    (lambda d, n: write_zip(d / 'legacy_ctor.pth',
                            {'meta': Call(torch.FloatTensor, n)}), 1000,
     HUGE // 4, 'torch.FloatTensor(750000000), which allocates 2.8 GiB',
     lambda obj, n: obj['meta'].numel() == n),
    'numpy scalar of a void dtype': (lambda d, n: write_zip(
        d / 'scalar.pth',
        {'meta': Call(np._core.multiarray.scalar, Call(np.dtype, f'V{n}'))}),
                                     1000, 2_000_000_000, 'allocates 1.9 GiB',
                                     lambda obj, n: obj['meta'].nbytes == n),
    'numpy array of a huge shape':
    (lambda d, n: write_zip(d / 'ndarray.pth', {
        'meta':
        Call(np._core.multiarray._reconstruct, np.ndarray, (n, ), b'b')
    }), 1000, HUGE, 'shape (3000000000,)', lambda obj, n: obj['meta'].shape ==
     (n, )),
    'broadcast view copied to float64': (lambda d, n: write_zip(
        d / 'broadcast.pth', {
            'meta':
            Call(_rebuild_device_tensor_from_cpu_tensor,
                 tensor(Storage('0', 1), (n, ),
                        (0, )), torch.float64, 'cpu', False)
        }, {'0': 1}), 1000, HUGE, '_rebuild_tensor_v2',
                                         lambda obj, n: obj['meta'].shape ==
                                         (n, )),
    'storage larger than its record': (lambda d, n: write_zip(
        d / 'claim.pth', {'state_dict': {
            'w': tensor(Storage('0', n), (n, ))
        }}, {'0': 1000}), 1000, HUGE, 'whose record holds 1000 B', lambda obj,
                                       n: obj['state_dict']['w'].numel() == n),
    'deflated record': (lambda d, n: write_zip(d / 'deflated.pth', {
        'state_dict': {
            'w': tensor(Storage('0', n), (n, ))
        }
    }, {'0': n}, zipfile.ZIP_DEFLATED), 1000, 512 * 2**20,
                        'max_checkpoint_expansion = 2',
                        lambda obj, n: obj['state_dict']['w'].numel() == n),
    'legacy storage claims':
    (lambda d, n: write_legacy(d / 'legacy.pth', {
        'state_dict': {
            'w': tensor(Storage('0', n, torch.FloatStorage), (n, ))
        }
    }, {'0': bytes(4 * min(n, 1000))}, 4), 1000, HUGE // 4,
     'a legacy torch file stores them raw',
     lambda obj, n: obj['state_dict']['w'].numel() == n),
    'two million empty sets':
    (lambda d, n: write_zip(d / 'sets.pth', None, pickle_bytes=_deep_sets(n)),
     1000, 2_000_000,
     f'more than {MAX_PICKLE_BYTES // 2**20}.0 MiB of objects',
     lambda obj, n: len(obj['meta']) == n),
    'nine megabytes of tuples':
    (lambda d, n: write_zip(d / 'tuples.pth', None, pickle_bytes=_tuples(n)),
     1000, 4_500_000, 'reached at the opcode TUPLE1',
     lambda obj, n: len(obj['meta']) == n),
}
#: Peak-RSS bounds other than RSS_LIMIT_MB: the walk holds the objects it
#: prices until its budget (16 times the file's size here) is spent.
RSS_BOUND = {'nine megabytes of tuples': 16 * 9 * 10**6 + RSS_LIMIT_MB * 2**20}


def _make(name: str, folder: Path, honest: bool) -> str:
    make, small, huge, _, _ = ATTACKS[name]
    folder = folder / ('honest' if honest else 'huge') / name.replace(
        ' ', '_').replace('(', '').replace(')', '')
    folder.mkdir(parents=True)
    return make(folder, small if honest else huge)


@pytest.mark.parametrize('name', ATTACKS)
def test_honest_twin_loads(name, tmp_path):
    """The crafted format is real: at a small size it loads and is the
    object the huge one asks for."""
    _, small, _, _, check = ATTACKS[name]
    path = _make(name, tmp_path, honest=True)
    assert check(safe_torch_load(path), small)


#: Run in a child process: load each file with the address space capped,
#: report the outcome and the peak RSS increase of each load.
MEASURE = r'''
import json, resource, sys
import rsrefseg_mm
from rsrefseg_mm.utils import safe_torch_load


def status():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return {k: int(fields[k].split()[0]) * 1024
            for k in ('VmRSS', 'VmHWM', 'VmSize')}


cap = status()['VmSize'] + 2**30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = {}
for path in sys.argv[1:]:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    before = status()['VmRSS']
    try:
        safe_torch_load(path)
        outcome = 'loaded'
    except BaseException as e:
        outcome = f'{type(e).__name__}: {e}'
    peak = status()['VmHWM'] if reset else None
    results[path] = dict(outcome=outcome, rss_increase=(
        None if peak is None else peak - before))
print(json.dumps(results))
'''


@pytest.fixture(scope='module')
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bombs')
    paths = {name: _make(name, folder, honest=False) for name in ATTACKS}
    for path in paths.values():
        assert os.path.getsize(path) < 10 * 2**20, path
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, '-c', MEASURE, *paths.values()],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print('\nattack | file | refusal | peak RSS increase')  # pytest -s
    for name, path in paths.items():
        outcome, rss = results[path]['outcome'], results[path]['rss_increase']
        print(f'{name} | {format_bytes(os.path.getsize(path))} | '
              f'{outcome.split(": ", 2)[-1][:90]}... | '
              f'{"n/a" if rss is None else format_bytes(rss)}')
    return {name: (path, results[path]) for name, path in paths.items()}


@pytest.mark.parametrize('name', ATTACKS)
def test_small_file_huge_claim_is_refused(name, measured):
    """Refused by name with CheckpointLimitError (not a MemoryError of
    the capped process), peak RSS up by at most RSS_LIMIT_MB (RSS_BOUND
    for a file that spends the walk's object budget)."""
    path, result = measured[name]
    fragment = ATTACKS[name][3]
    assert result['outcome'].startswith(f'CheckpointLimitError: {path}: '), \
        result['outcome']
    assert fragment in result['outcome'], result['outcome']
    if result['rss_increase'] is not None:
        bound = RSS_BOUND.get(name, RSS_LIMIT_MB * 2**20)
        assert result['rss_increase'] < bound, result


def test_memo_index_is_not_an_allocation(tmp_path):
    """A cut pickle with a memo index of 2**31 - 1 is a corrupt file (the
    walk keeps its memo in a dict, as torch's unpickler does)."""
    path = tmp_path / 'memo.pth'
    path.write_bytes(_memo_index())
    with pytest.raises(CorruptCheckpointError, match=str(path)):
        safe_torch_load(str(path))


def test_max_checkpoint_expansion_is_the_limit(tmp_path):
    """A deflated checkpoint loads with a limit above its ratio, from the
    argument, the context or the runner's config key; a limit below 1 or
    not a number is refused by name."""
    n = 4 * 2**20
    path = write_zip(tmp_path / 'deflated.pth',
                     {'state_dict': {
                         'w': tensor(Storage('0', n), (n, ))
                     }}, {'0': n}, zipfile.ZIP_DEFLATED)
    ratio = n / os.path.getsize(path)
    assert ratio > 100
    with pytest.raises(CheckpointLimitError, match=f'{ratio:.0f} times'):
        safe_torch_load(path)
    with allow_unsafe_load():  # the container is checked for trusted files
        with pytest.raises(CheckpointLimitError):
            safe_torch_load(path)
    loaded = safe_torch_load(path, max_expansion=ratio + 1)
    assert loaded['state_dict']['w'].numel() == n
    with checkpoint_limits(ratio + 1):
        assert safe_torch_load(path)['state_dict']['w'].numel() == n
        check_checkpoint_size(path)
    with pytest.raises(CheckpointLimitError):
        check_checkpoint_size(path)  # the block ended
    for bad in (0.5, 'two', float('inf'), True):
        with pytest.raises(ValueError, match='max_checkpoint_expansion'):
            safe_torch_load(path, max_expansion=bad)
    assert RSRefSegRunner.max_checkpoint_expansion == 2.0


def test_deflated_torchscript_archive_is_refused(tmp_path):
    """The CLIP reader checks a TorchScript archive's records before
    torch.jit.load reads them."""
    n = 64 * 2**20
    path = tmp_path / 'ViT-B-16.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('ViT-B-16/constants.pkl', b'\x80\x02).')
        archive.writestr('ViT-B-16/code/__torch__/model.py', 'pass\n')
        info = zipfile.ZipInfo('ViT-B-16/data/0')
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, bytes(n))
    with pytest.raises(CheckpointLimitError, match=str(path)):
        load_clip_file(str(path))
