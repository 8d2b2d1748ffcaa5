"""Building SAM parts and loading SAM checkpoints."""
import pytest
import torch

from rsrefseg_mm.models.sam.sam_builder import (SAM_DEFAULTS,
                                                build_sam_modules,
                                                load_sam_checkpoint,
                                                sam_arch_settings)
from helpers import TINY_SAM

TINY = TINY_SAM


def test_arch_settings():
    assert sam_arch_settings('vit_l')['encoder_depth'] == 24
    assert sam_arch_settings('vit_h')['encoder_embed_dim'] == 1280
    assert sam_arch_settings(
        TINY)['decoder_depth'] == SAM_DEFAULTS['decoder_depth']
    with pytest.raises(ValueError, match='Unknown SAM arch'):
        sam_arch_settings('vit_x')
    with pytest.raises(ValueError, match='embed_dims'):
        sam_arch_settings(dict(embed_dims=3))


def test_build_matches_segment_anything_layout():
    from segment_anything import sam_model_registry
    torch.manual_seed(0)
    ours = build_sam_modules('vit_b').state_dict()
    theirs = sam_model_registry['vit_b'](checkpoint=None).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = build_sam_modules(TINY)
    state = src.state_dict()
    path = tmp_path / 'sam_tiny.pth'
    torch.save(dict(state_dict=state), path)  # wrapped state dicts work
    torch.manual_seed(1)
    dst = build_sam_modules(TINY)
    res = load_sam_checkpoint(dst, str(path))
    assert res == dict(
        missing_keys=[],
        unexpected_keys=[],
        layout='segment-anything',
        decoder_norm_eps=None)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_missing_or_unexpected_keys_are_an_error(tmp_path):
    state = build_sam_modules(TINY).state_dict()
    lacks = [k for k in state if k.startswith('mask_decoder.output_hyper')]
    path = tmp_path / 'sam_partial.pth'
    torch.save({k: v for k, v in state.items() if k not in lacks}, path)
    with pytest.raises(ValueError) as err:
        load_sam_checkpoint(build_sam_modules(TINY), str(path), 'vit_b')
    msg = str(err.value)
    assert str(path) in msg and "arch 'vit_b'" in msg
    assert f'{len(lacks)} missing tensors' in msg and lacks[0] in msg
    assert 'strict_load=False' in msg
    extra = dict(state, **{'extra.weight': torch.zeros(1)})
    torch.save(extra, path)
    with pytest.raises(ValueError, match=r"1 unexpected.*'extra\.weight'"):
        load_sam_checkpoint(build_sam_modules(TINY), str(path))


def test_partial_load_only_when_asked(tmp_path):
    torch.manual_seed(0)
    state = build_sam_modules(TINY).state_dict()
    state.pop('mask_decoder.iou_token.weight')
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'sam_partial.pth'
    torch.save(state, path)
    dst = build_sam_modules(TINY)
    res = load_sam_checkpoint(dst, str(path), strict=False)
    assert res['missing_keys'] == ['mask_decoder.iou_token.weight']
    assert res['unexpected_keys'] == ['extra.weight']
    loaded = dst.state_dict()
    assert all(
        torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


def test_wrong_arch_is_a_clear_error(tmp_path):
    path = tmp_path / 'sam_tiny.pth'
    torch.save(build_sam_modules(TINY).state_dict(), path)
    other = build_sam_modules(dict(TINY, encoder_embed_dim=48))
    with pytest.raises(ValueError, match='does not fit arch'):
        load_sam_checkpoint(other, str(path), arch_name='vit_b')
    torch.save({'foo.weight': torch.zeros(1)}, path)
    with pytest.raises(ValueError, match='shares no key'):
        load_sam_checkpoint(other, str(path))


def test_missing_file_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_sam_checkpoint(
            build_sam_modules(TINY),
            str(tmp_path / 'nope.pth'),
            arch_name='vit_b')
    msg = str(err.value)
    assert 'sam_vit_b_01ec64.pth' in msg
    assert 'checkpoints/sam_vit_b_01ec64.pth' in msg
