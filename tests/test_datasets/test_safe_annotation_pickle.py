"""Annotation pickles are read without running code: plain data loads, a
crafted ``refs(unc).p`` is refused (dataset and checker) and its command
never runs."""
import os
import os.path as osp
import pickle

import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.utils import (PlainDataLimitError, UnsafePickleError,
                               load_plain_pickle, load_plain_pickle_file)
from helpers import RunsACommand, load_script

PLAIN = [
    dict(
        ref_id=1,
        split='train',
        file_name='a.jpg',
        ann_id=7,
        sentences=[dict(sent='the ship', sent_id=0, tokens=['the', 'ship'])],
        bbox=[1.5, 2.0, 3, 4],
        flags=(True, False, None),
        counts=b'\x00\x01rle',
        big=2**70,
        neg=-3.25),
    {
        'nested': {
            'set': {1, 2},
            'frozen': frozenset({'x'})
        }
    },
]
#: The global a pickled ``os.system`` asks for on this platform.
SYSTEM = f'{os.system.__module__}.system'


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips_in_every_protocol(protocol):
    assert load_plain_pickle(pickle.dumps(PLAIN, protocol)) == PLAIN


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_numeric_scalars_load(protocol):
    """What annotation converters written with NumPy leave behind."""
    import numpy as np
    data = dict(
        ann_id=np.int64(7),
        area=np.float32(12.5),
        iscrowd=np.bool_(False),
        label=np.uint8(200),
        score=np.float64(0.25),
        z=np.complex64(1 + 2j))
    out = load_plain_pickle(pickle.dumps(data, protocol))
    assert out == data
    assert all(type(out[k]) is type(v) for k, v in data.items())


@pytest.mark.parametrize('value', [
    'np.datetime64("2020-01-01")', 'np.str_("x")', 'np.void(b"ab")',
    'np.array([1, 2])', 'np.dtype("O")'
])
def test_other_numpy_objects_are_refused(value):
    import numpy as np  # noqa: F401 (used by eval)
    with pytest.raises(UnsafePickleError):
        load_plain_pickle(pickle.dumps(eval(value), 2), 'x.p')


def test_python2_pickle_of_a_set():
    # protocol 2 as Python 2 writes it: __builtin__.set([...])
    raw = b'\x80\x02c__builtin__\nset\nq\x00]q\x01K\x01a\x85q\x02Rq\x03.'
    assert load_plain_pickle(raw) == {1}


@pytest.mark.parametrize('payload', [
    lambda marker: RunsACommand(marker),
    lambda marker: [dict(ref_id=1, sentences=[RunsACommand(marker)])],
])
def test_crafted_pickle_is_refused_before_it_runs(tmp_path, payload):
    marker = tmp_path / 'command_ran'
    path = tmp_path / 'refs.p'
    path.write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(UnsafePickleError) as exc:
        load_plain_pickle_file(str(path))
    assert exc.value.global_name == SYSTEM
    assert str(path) in str(exc.value) and SYSTEM in str(exc.value)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the stock unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize('name', [
    'builtins.eval', 'builtins.getattr', 'numpy.core.multiarray._reconstruct',
    'collections.OrderedDict', 'numpy.frombuffer'
])
def test_other_globals_are_refused(name):
    module, attr = name.rsplit('.', 1)
    raw = b'\x80\x02c' + f'{module}\n{attr}\n'.encode() + b')R.'
    with pytest.raises(UnsafePickleError, match=name.replace('.', r'\.')):
        load_plain_pickle(raw, 'x.p')


def test_not_a_pickle_is_an_unpickling_error():
    with pytest.raises(pickle.UnpicklingError):
        load_plain_pickle(b'not a pickle', 'x.p')


def crafted_refs(root, marker):
    """Replace the refs of a REFER layout with a list that runs a command
    when unpickled, keeping the real refs around it."""
    path = root / 'refs(unc).p'
    refs = pickle.loads(path.read_bytes())
    refs.insert(1, RunsACommand(marker))
    path.write_bytes(pickle.dumps(refs))
    return path


def test_rrsisd_dataset_refuses_a_crafted_annotation_file(
        refer_copy, tmp_path):
    marker = tmp_path / 'command_ran'
    path = crafted_refs(refer_copy['root'], marker)
    init_default_scope('mmseg')
    with pytest.raises(UnsafePickleError) as exc:
        DATASETS.build(
            dict(
                type='RRSISDDataset',
                data_root=str(refer_copy['root']),
                split='train',
                pipeline=[]))
    assert str(path) in str(exc.value) and SYSTEM in str(exc.value)
    assert not marker.exists()


def test_rrsisd_dataset_still_reads_the_plain_file(refer_fixture):
    init_default_scope('mmseg')
    ds = DATASETS.build(
        dict(
            type='RRSISDDataset',
            data_root=str(refer_fixture['root']),
            split='train',
            pipeline=[]))
    assert len(ds) == refer_fixture['counts']['train']


def test_checker_refuses_a_crafted_annotation_file(refer_copy, tmp_path,
                                                   capsys):
    marker = tmp_path / 'command_ran'
    path = crafted_refs(refer_copy['root'], marker)
    tool = load_script('tools/dataset_converters/rrsisd.py')
    assert tool.main([str(refer_copy['root']), '--skip-count-check']) == 1
    out = capsys.readouterr().out
    assert 'FAILED' in out and str(path) in out and SYSTEM in out
    assert not marker.exists()


def test_rrsisd_dataset_reads_numpy_ids(refer_copy, refer_fixture):
    """The same samples when the refs' ids are NumPy integers."""
    import numpy as np
    path = refer_copy['root'] / 'refs(unc).p'
    refs = pickle.loads(path.read_bytes())
    for ref in refs:
        for key in ('ref_id', 'ann_id', 'image_id', 'category_id'):
            if isinstance(ref.get(key), int):
                ref[key] = np.int64(ref[key])
        for sent in ref['sentences']:
            sent['sent_id'] = np.int64(sent['sent_id'])
    path.write_bytes(pickle.dumps(refs))
    init_default_scope('mmseg')

    def samples(root):
        ds = DATASETS.build(
            dict(
                type='RRSISDDataset',
                data_root=str(root),
                split='train',
                pipeline=[]))
        return [(osp.relpath(d['img_path'],
                             root), d['text'], str(d.get('ann_id')))
                for d in ds.load_data_list()]

    assert samples(refer_copy['root']) == samples(refer_fixture['root'])


def test_memo_references_expanding_far_beyond_the_file_are_refused(tmp_path):
    # one list referenced again and again: a few KB of memo opcodes stand
    # for millions of strings once a reader walks them
    inner = ['expression'] * 1000
    outer = [inner] * 20000
    raw = pickle.dumps(outer, 4)
    assert len(raw) < 100_000
    with pytest.raises(PlainDataLimitError, match='x.p.*expands'):
        load_plain_pickle(raw, 'x.p')
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(raw)
    with pytest.raises(PlainDataLimitError, match=r'refs\(unc\)\.p'):
        load_plain_pickle_file(str(path))
    # the same data written without shared references is admitted
    assert len(load_plain_pickle(raw, 'x.p', max_nodes=10**8)) == 20000


def test_deep_nesting_is_refused_by_name():
    # 200,000 nested lists in 400 KB: EMPTY_LIST x n, then APPEND x (n-1)
    n = 200_000
    raw = b'\x80\x04' + b']' * n + b'a' * (n - 1) + b'.'
    with pytest.raises(PlainDataLimitError, match='deep.p.*nest'):
        load_plain_pickle(raw, 'deep.p')


def test_refer_like_data_passes_the_size_check():
    refs = [
        dict(
            ref_id=i,
            ann_id=i,
            image_id=i // 3,
            split='train',
            file_name=f'{i // 3:05d}.jpg',
            category_id=i % 20,
            sent_ids=[2 * i, 2 * i + 1],
            sentences=[
                dict(
                    sent=f'the {j} white storage tank left of the road',
                    raw=f'The {j} white storage tank left of the road',
                    tokens=['the', str(j), 'white', 'storage', 'tank'],
                    sent_id=2 * i + j) for j in range(2)
            ]) for i in range(2000)
    ]
    for protocol in (2, 4):
        raw = pickle.dumps(refs, protocol)
        assert load_plain_pickle(raw, 'refs.p') == refs
