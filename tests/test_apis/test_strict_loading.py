"""Strict loading of trained checkpoints: init_referring_model and the
runner refuse a file whose tensors do not match, naming it; and a file
changed after it was written, or one whose records unpack to more than
max_checkpoint_expansion times its size."""
import zipfile

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_mm.apis import init_referring_model
from rsrefseg_mm.utils import (ChangedCheckpointError, CheckpointLimitError,
                               CheckpointMismatchError, add_state_dict_hash)
from rsrefseg_mm.utils.checkpoint_match import state_dict_mismatch
from helpers import TINY_CONFIG


def test_mismatch_counts_and_first_keys():
    model = {
        'a.weight': torch.zeros(4),
        'bn.num_batches_tracked': torch.tensor(0),
        'scale': torch.zeros(()),
        **{f'k{i}': torch.zeros(1)
           for i in range(7)}
    }
    state = {'a.weight': torch.zeros(3), 'scale': torch.zeros(1), 'x': 1}
    state['y'] = torch.zeros(2)
    mismatch = state_dict_mismatch(model, state)
    # BN's step counter may be absent and a (1,) tensor fills a 0-dim one,
    # as torch loads them
    assert mismatch.missing == [f'k{i}' for i in range(7)]
    assert mismatch.unexpected == ['x', 'y']
    assert mismatch.reshaped == [('a.weight', (3, ), (4, ))]
    got = mismatch.summary(limit=3)
    assert '2 unexpected (e.g. x, y)' in got
    assert '7 missing (e.g. k0, k1, k2, ...)' in got
    assert '1 size mismatch (e.g. a.weight: checkpoint (3,), model (4,))' \
        in got
    assert not state_dict_mismatch(model, {**model, 'k0': torch.ones(1)})


@pytest.fixture(scope='module')
def tiny_config():
    return TINY_CONFIG


@pytest.fixture(scope='module')
def state(tiny_config):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(tiny_config).model).state_dict()


def save(path, state_dict):
    torch.save(dict(state_dict=state_dict, meta=dict()), path)
    return str(path)


def test_init_refuses_missing_and_renamed_tensors(tiny_config, state,
                                                  tmp_path):
    key = 'decode_head.mask_decoder.iou_token.weight'
    partial = {k: v for k, v in state.items() if k != key}
    path = save(tmp_path / 'partial.pth', partial)
    with pytest.raises(CheckpointMismatchError) as info:
        init_referring_model(tiny_config, path)
    message = str(info.value)
    assert path in message and '1 missing' in message and key in message
    assert 'strict=False' in message
    renamed = {'model.' + k: v for k, v in state.items()}
    with pytest.raises(CheckpointMismatchError, match='unexpected'):
        init_referring_model(tiny_config,
                             save(tmp_path / 'renamed.pth', renamed))
    # opting out loads what matches; the rest keeps its initial value
    model = init_referring_model(tiny_config, path, strict=False)
    other = 'decode_head.mask_decoder.mask_tokens.weight'
    torch.testing.assert_close(model.state_dict()[other], state[other])


def test_init_refuses_other_shapes(tiny_config, state, tmp_path):
    key = 'neck.sparse_proj.weight' if 'neck.sparse_proj.weight' in state \
        else next(k for k in state if k.startswith('neck.')
                  and state[k].dim() > 1)
    wrong = dict(state)
    wrong[key] = torch.zeros(*(s + 1 for s in state[key].shape))
    path = save(tmp_path / 'shapes.pth', wrong)
    with pytest.raises(CheckpointMismatchError, match='size mismatch'):
        init_referring_model(tiny_config, path)


def test_init_keeps_dataset_meta(tiny_config, state, tmp_path):
    meta = dict(classes=('background', 'target'), palette=[[0, 0, 0]] * 2)
    path = tmp_path / 'meta.pth'
    torch.save(dict(state_dict=state, meta=dict(dataset_meta=meta)), path)
    model = init_referring_model(tiny_config, str(path))
    assert model.dataset_meta == meta and not model.training


def test_init_checks_the_hash_and_the_expansion(tiny_config, state, tmp_path):
    """A hashed checkpoint loads; 4 KiB of 0xFF written inside its largest
    weight record is refused by name (torch.load alone would load it); a
    deflated copy needs max_checkpoint_expansion in the config."""
    checkpoint = dict(state_dict=state, meta=dict())
    add_state_dict_hash(checkpoint)
    path = tmp_path / 'hashed.pth'
    torch.save(checkpoint, path)
    model = init_referring_model(tiny_config, str(path))
    key = max(state, key=lambda k: state[k].numel())
    torch.testing.assert_close(model.state_dict()[key], state[key])
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if '/data/' in i.filename),
                     key=lambda i: i.file_size)
    assert record.file_size >= 8192
    changed = tmp_path / 'changed.pth'
    data = bytearray(path.read_bytes())
    start = record.header_offset + 30 + len(record.filename) + int.from_bytes(
        data[record.header_offset + 28:record.header_offset + 30], 'little')
    data[start + 4096:start + 8192] = b'\xff' * 4096
    changed.write_bytes(bytes(data))
    torch.load(changed, weights_only=True)  # torch alone does not notice
    with pytest.raises(ChangedCheckpointError) as info:
        init_referring_model(tiny_config, str(changed))
    assert str(
        info.value).startswith(f'{changed}: changed after it was written')
    # weights of all zeros deflate far below their size (trained weights
    # barely do)
    zeros = dict(state_dict={k: torch.zeros_like(v) for k, v in state.items()})
    add_state_dict_hash(zeros)
    torch.save(zeros, tmp_path / 'zeros.pth')
    deflated = tmp_path / 'deflated.pth'
    with zipfile.ZipFile(tmp_path / 'zeros.pth') as src, \
            zipfile.ZipFile(deflated, 'w') as dst:
        for info_ in src.infolist():
            dst.writestr(info_.filename, src.read(info_), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(deflated) as archive:
        ratio = sum(i.file_size for i in archive.infolist()) / \
            deflated.stat().st_size
    assert ratio > 2
    with pytest.raises(CheckpointLimitError) as info:
        init_referring_model(tiny_config, str(deflated))
    assert str(info.value).startswith(f'{deflated}: refused before loading')
    assert 'max_checkpoint_expansion = 2' in str(info.value)
    model = init_referring_model(
        tiny_config,
        str(deflated),
        cfg_options=dict(max_checkpoint_expansion=ratio + 1))
    assert model.state_dict()[key].eq(0).all()
