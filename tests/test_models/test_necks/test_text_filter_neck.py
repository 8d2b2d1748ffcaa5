"""TextFilterNeck: shapes, filters, padding and ablation switches."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401

D, C = 16, 32


def make_neck(**kwargs):
    """The CLIP variant's neck (configs/_base_/models/rsrefseg.py)."""
    torch.manual_seed(0)
    cfg = dict(
        type='TextFilterNeck',
        in_channels=D,
        prompt_dims=C,
        dense_prompt_size=(32, 32),
        down_spatial_times=2,
        exclude_sot=True,
        filter_cfg=dict(type='learned', init_bias=-10.0),
        fuse_norm_act=False,
        final_proj=False,
        pos_embed='random')
    cfg.update(kwargs)
    init_default_scope('mmseg')
    return MODELS.build(cfg).eval()


def make_feats(B=2, L=7, h=8, w=8, lengths=(5, 3)):
    torch.manual_seed(1)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return dict(
        img_feats=torch.randn(B, D, h, w),
        img_global=torch.randn(B, D),
        text_feats=torch.randn(B, L, D),
        text_global=torch.randn(B, D),
        text_mask=mask,
        logit_scale=torch.tensor(20.))


@pytest.mark.parametrize('k,n', [(0, 64), (1, 16), (2, 4), (3, 1)])
def test_output_shapes(k, n):
    neck = make_neck(down_spatial_times=k)
    out = neck(make_feats())
    assert out['sparse_prompts'].shape == (2, n, C)
    assert out['dense_prompts'].shape == (2, 1, 32, 32)
    assert out['local_maps'].shape == (2, 7, 8, 8)
    assert out['global_map'].shape == (2, 8, 8)
    assert len(neck.downsample) == k


def test_non_square_grid():
    out = make_neck(down_spatial_times=1)(make_feats(h=6, w=10))
    assert out['sparse_prompts'].shape == (2, 15, C)


def test_filter_definitions():
    neck = make_neck(filter_cfg=dict(type='learned', init_bias=-1.5))
    feats = make_feats()
    out = neck(feats)
    V = F.normalize(feats['img_feats'], dim=1)
    t = F.normalize(feats['text_global'], dim=-1)
    g = torch.sigmoid(20 * torch.einsum('bdhw,bd->bhw', V, t) - 1.5)
    assert torch.allclose(out['global_map'], g, atol=1e-5)
    assert torch.allclose(out['global_logits'].sigmoid(), g, atol=1e-5)
    T = F.normalize(feats['text_feats'], dim=-1)
    loc = torch.sigmoid(20 * torch.einsum('bdhw,bld->blhw', V, T) - 1.5)
    # sample 0: tokens 0..4 real, SOT (0) excluded from the mean and zeroed
    assert torch.allclose(out['local_maps'][0, 1:5], loc[0, 1:5], atol=1e-5)
    assert (out['local_maps'][0, 0] == 0).all()
    assert (out['local_maps'][0, 5:] == 0).all()
    logits = 20 * torch.einsum('bdhw,bd->bhw', V, t) - 1.5
    dense = F.interpolate(
        logits[:, None], size=(32, 32), mode='bilinear', align_corners=False)
    assert torch.allclose(out['dense_prompts'], dense, atol=1e-5)


def test_padding_tokens_are_ignored():
    neck = make_neck()
    feats = make_feats()
    out = neck(feats)
    feats2 = dict(feats)
    feats2['text_feats'] = feats['text_feats'].clone()
    feats2['text_feats'][0, 5:] = torch.randn(2, D) * 10
    feats2['text_feats'][1, 3:] = torch.randn(4, D) * 10
    out2 = neck(feats2)
    assert torch.allclose(out['sparse_prompts'], out2['sparse_prompts'])
    # a real token does matter
    feats2['text_feats'][0, 2] = torch.randn(D) * 10
    assert not torch.allclose(out['sparse_prompts'][0],
                              neck(feats2)['sparse_prompts'][0])


def test_sot_handling():
    feats = make_feats()
    feats_sot = dict(feats)
    feats_sot['text_feats'] = feats['text_feats'].clone()
    feats_sot['text_feats'][:, 0] = torch.randn(2, D) * 10
    neck = make_neck(exclude_sot=True)
    assert torch.allclose(
        neck(feats)['sparse_prompts'],
        neck(feats_sot)['sparse_prompts'])
    neck = make_neck(exclude_sot=False)
    assert not torch.allclose(
        neck(feats)['sparse_prompts'],
        neck(feats_sot)['sparse_prompts'])
    # a sentence with a single real token keeps it
    w = make_neck().token_weights(torch.tensor([[True, False, False]]))
    assert w.tolist() == [[True, False, False]]


@pytest.mark.parametrize('switch', [
    dict(use_local_filter=False),
    dict(use_global_filter=False),
    dict(filter_cfg=dict(type='learned', init_bias=-3.0, gain=True)),
])
def test_each_switch_changes_output(switch):
    feats = make_feats()
    base = make_neck()
    other = make_neck(**switch)
    if 'filter_cfg' in switch:
        assert isinstance(other.log_scale_gain, torch.nn.Parameter)
        with torch.no_grad():
            other.log_scale_gain.fill_(0.5)
    assert other.state_dict().keys() >= base.state_dict().keys()
    other.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        a = base(feats)['sparse_prompts']
        b = other(feats)['sparse_prompts']
    assert a.shape == b.shape
    assert (a - b).abs().max() > 1e-4


def test_local_off_means_branch_is_v():
    """With both filters off, F = [V, V, V]: maps no longer reach prompts."""
    neck = make_neck(use_local_filter=False, use_global_filter=False)
    feats = make_feats()
    feats2 = dict(
        feats, text_feats=torch.randn(2, 7, D), text_global=torch.randn(2, D))
    assert torch.allclose(
        neck(feats)['sparse_prompts'],
        neck(feats2)['sparse_prompts'])


def test_dense_prompt_switch():
    out = make_neck(use_dense_prompt=False)(make_feats())
    assert out['dense_prompts'] is None
    assert out['sparse_prompts'].shape == (2, 4, C)


def test_gradients_reach_bias_and_convs():
    neck = make_neck(filter_cfg=dict(type='learned', gain=True)).train()
    out = neck(make_feats())
    (out['sparse_prompts'].sum() + out['dense_prompts'].sum()).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_inputs():
    neck = make_neck()
    feats = make_feats()
    with pytest.raises(ValueError, match='in_channels=16'):
        neck(dict(feats, img_feats=torch.randn(2, 8, 8, 8)))
    with pytest.raises(KeyError, match='text_global'):
        neck({k: v for k, v in feats.items() if k != 'text_global'})
    with pytest.raises(KeyError, match='logit_scale'):
        neck({k: v for k, v in feats.items() if k != 'logit_scale'})
    with pytest.raises(ValueError):
        make_neck(down_spatial_times=-1)


def test_syncbn_only_via_config():
    neck = make_neck()
    assert isinstance(neck.downsample[0].norm, torch.nn.BatchNorm2d)
    neck = make_neck(norm_cfg=dict(type='SyncBN'))
    assert type(neck.downsample[0].norm).__name__ == 'SyncBatchNorm'
