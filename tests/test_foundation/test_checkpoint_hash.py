"""state_dict_sha256: what the hash binds (names, dtypes, shapes, every
byte) and what it ignores (insertion order, memory layout), and the
tensors it refuses to hash."""
from collections import OrderedDict

import pytest
import torch

from rsrefseg_mm.utils import (ChangedCheckpointError, add_state_dict_hash,
                               state_dict_sha256, verify_state_dict_hash)
from rsrefseg_mm.utils.checkpoint_hash import UnhashableTensorError

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64,
          torch.complex64, torch.int8, torch.uint8, torch.int64, torch.bool)


def _state():
    g = torch.Generator().manual_seed(0)
    state = OrderedDict()
    for i, dtype in enumerate(DTYPES):
        values = torch.randn(3, 5, generator=g) * 10
        state[f'layer{i}.{dtype}'] = values.to(dtype)
    state['scalar'] = torch.tensor(2.5)
    state['empty'] = torch.zeros(0, 4)
    return state


def test_hash_binds_names_dtypes_shapes_and_bytes():
    state = _state()
    digest = state_dict_sha256(state)
    assert len(digest) == 64 and digest == state_dict_sha256(_state())
    # insertion order and memory layout do not matter
    reordered = OrderedDict(reversed(list(state.items())))
    reordered['layer0.torch.float32'] = state['layer0.torch.float32'].t(
    ).contiguous().t()
    assert not reordered['layer0.torch.float32'].is_contiguous()
    assert state_dict_sha256(reordered) == digest
    for key in state:
        if state[key].numel() == 0:
            continue
        flipped = dict(state)
        raw = state[key].clone().reshape(-1).view(torch.uint8)
        raw[-1] ^= 1  # one bit of the last element
        flipped[key] = raw.view(state[key].dtype).reshape(state[key].shape)
        assert state_dict_sha256(flipped) != digest, key
    renamed = dict(state)
    renamed['scalar_'] = renamed.pop('scalar')
    reshaped = dict(state, empty=torch.zeros(4, 0))
    retyped = dict(state, scalar=state['scalar'].view(torch.int32))
    for other in (renamed, reshaped, retyped):
        assert state_dict_sha256(other) != digest


def test_views_sparse_and_meta_tensors_are_refused():
    base = torch.arange(10.0)
    # a view into part of a storage hashes its own elements only
    assert state_dict_sha256({'w': base[2:5]}) == state_dict_sha256(
        {'w': torch.tensor([2.0, 3.0, 4.0])})
    for bad in (base[:1].expand(100), base.to_sparse(),
                torch.empty(3, device='meta')):
        with pytest.raises(UnhashableTensorError, match="^w: "):
            state_dict_sha256({'w': bad})


def test_non_tensor_entries_add_their_name_and_type():
    digest = state_dict_sha256({'w': torch.ones(2), 'extra': 1})
    assert digest == state_dict_sha256({'w': torch.ones(2), 'extra': 2})
    assert digest != state_dict_sha256({'w': torch.ones(2), 'extra': 'x'})
    assert digest != state_dict_sha256({'w': torch.ones(2)})


def test_verify_names_the_file_and_what_is_wrong():
    checkpoint = dict(state_dict=_state())
    add_state_dict_hash(checkpoint)
    assert verify_state_dict_hash(checkpoint, 'ok.pth')
    checkpoint['state_dict']['scalar'] += 1
    with pytest.raises(
            ChangedCheckpointError,
            match=r'^bad\.pth: changed after it was written: '
            r'its state_dict hashes to'):
        verify_state_dict_hash(checkpoint, 'bad.pth')
    for meta, state_dict, reason in (
        (dict(state_dict_sha256='abc'), {}, 'is not a sha256'),
        (dict(state_dict_sha256='0' * 64), None, 'but no state_dict'),
        (dict(state_dict_sha256='0' * 64), {
            'w': torch.ones(1).expand(5)
        }, 'cannot be hashed: w: a view of 5 elements'),
    ):
        with pytest.raises(ChangedCheckpointError, match=reason):
            verify_state_dict_hash(
                dict(meta=meta, state_dict=state_dict), 'x.pth')
    with pytest.raises(TypeError, match='meta'):
        add_state_dict_hash(dict(state_dict={}, meta=[]))
