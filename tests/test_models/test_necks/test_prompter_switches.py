"""TextFilterNeck switches for the RSRefSeg authors' prompter, checked
against an independent re-implementation of their formula."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

import rsrefseg_mm  # noqa: F401

D, C, h = 24, 16, 27


def authors_neck(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        type='TextFilterNeck',
        in_channels=D,
        prompt_dims=C,
        dense_prompt_size=(64, 64),
        down_spatial_times=2,
        exclude_sot=False,
        filter_cfg=dict(type='backbone'),
        fuse_norm_act=True,
        final_proj=True,
        pos_embed='sam')
    cfg.update(kwargs)
    init_default_scope('mmseg')
    return with_random_norms(MODELS.build(cfg))


def with_random_norms(neck):
    """``neck`` in eval mode with non-trivial BN statistics and affine (so
    that the eval-mode norm matters)."""
    for m in neck.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.1)
            m.bias.data.normal_(0, 0.1)
    return neck.eval()


def sam_pe(dims=C):
    torch.manual_seed(3)
    return PositionEmbeddingRandom(dims // 2)


def feats(B=2, L=6, lengths=None, dims=D, grid=h):
    torch.manual_seed(1)
    mask = torch.ones(B, L, dtype=torch.bool)
    for i, n in enumerate(lengths or []):
        mask[i, n:] = False
    return dict(
        img_feats=torch.randn(B, dims, grid, grid),
        text_feats=torch.randn(B, L, dims),
        text_global=torch.randn(B, dims),
        text_mask=mask,
        logit_scale=torch.tensor(30.),
        logit_bias=torch.tensor(-2.))


def reference(f, neck, pe, dense_size=(64, 64)):
    """The authors' prompter written out with plain tensor ops: their scale
    and bias (the backbone's), their mean over all L positions, conv + BN
    + GELU fuse, SAM's encoding at the cell centres, conv + BN + GELU
    down-sampling and a final linear 1x1 conv; the weights are ``neck``'s.
    """
    V, T, t = f['img_feats'], f['text_feats'], f['text_global']
    h = V.shape[-1]
    s, b = f['logit_scale'], f['logit_bias']
    Vn = V / V.norm(p=2, dim=1, keepdim=True)
    Tn = T / T.norm(p=2, dim=2, keepdim=True)
    tn = t / t.norm(p=2, dim=1, keepdim=True)
    local = torch.sigmoid(torch.einsum('bchw,bdc->bdhw', Vn, Tn) * s + b)
    local_feat = torch.einsum('bdhw,bchw->bchw', local, V) / local.size(1)
    g_logit = torch.einsum('bchw,bc->bhw', Vn, tn) * s + b
    g_feat = torch.sigmoid(g_logit)[:, None] * V
    x = torch.cat([(V + local_feat) / 2, g_feat, V], dim=1)

    def conv_bn_gelu(x, module, stride, padding):
        x = F.conv2d(x, module.conv.weight, None, stride, padding)
        bn = module.bn
        x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                         bn.bias, False, 0., bn.eps)
        return F.gelu(x)

    x = conv_bn_gelu(x, neck.fuse, 1, 0)
    # SAM's positional encoding at cell centres (i + 0.5) / h
    c = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    coords = torch.stack(torch.meshgrid(c, c, indexing='xy'), dim=-1)
    coords = (2 * coords - 1) @ pe.positional_encoding_gaussian_matrix
    coords = 2 * math.pi * coords
    x = x + torch.cat([coords.sin(), coords.cos()], -1).permute(2, 0, 1)
    for m in neck.downsample:
        x = conv_bn_gelu(x, m, 2, 1)
    x = F.conv2d(x, neck.final_proj.weight, neck.final_proj.bias)
    dense = F.interpolate(
        g_logit[:, None],
        size=dense_size,
        mode='bilinear',
        align_corners=False)
    return x.flatten(2).transpose(1, 2), dense


def test_sparse_and_dense_prompts_equal_the_authors_formula():
    neck, pe = authors_neck(), sam_pe()
    neck.set_pos_embed_layer(pe)
    f = feats()
    with torch.no_grad():
        out = neck(f)
        ref_sparse, ref_dense = reference(f, neck, pe)
    assert out['sparse_prompts'].shape == (2, 49, C)  # 27 -> 14 -> 7
    torch.testing.assert_close(
        out['sparse_prompts'], ref_sparse, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out['dense_prompts'], ref_dense, atol=1e-4, rtol=1e-4)
    # final linear conv: tokens are not clipped by GELU (min ~ -0.17)
    assert out['sparse_prompts'].min() < -0.5


def test_padding_stays_out_of_the_local_mean():
    """Our documented improvement: the mean runs over real tokens only, i.e.
    the authors' formula applied to the unpadded sequence."""
    neck, pe = authors_neck(), sam_pe()
    neck.set_pos_embed_layer(pe)
    f = feats(B=1, L=6, lengths=[3])
    short = dict(
        f, text_feats=f['text_feats'][:, :3], text_mask=f['text_mask'][:, :3])
    with torch.no_grad():
        out = neck(f)
        ref_short, _ = reference(short, neck, pe)
        ref_padded, _ = reference(f, neck, pe)
    torch.testing.assert_close(
        out['sparse_prompts'], ref_short, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out['sparse_prompts'], ref_padded, atol=1e-3)


@pytest.mark.parametrize('switch', [
    dict(fuse_norm_act=False),
    dict(final_proj=False),
    dict(pos_embed='random')
])
def test_each_switch_changes_the_prompts(switch):
    pe = sam_pe()
    base, other = authors_neck(), authors_neck(**switch)
    base.set_pos_embed_layer(pe)
    if other.pos_embed == 'sam':
        other.set_pos_embed_layer(pe)
    f = feats()
    with torch.no_grad():
        a, b = base(f)['sparse_prompts'], other(f)['sparse_prompts']
    assert a.shape == b.shape
    assert not torch.allclose(a, b, atol=1e-3)


def test_sam_pos_embed_must_be_set_and_is_not_registered():
    neck = authors_neck()
    with pytest.raises(RuntimeError, match='set_pos_embed_layer'):
        neck(feats())
    neck.set_pos_embed_layer(sam_pe())
    assert not any('gaussian' in k for k in neck.state_dict())
    with pytest.raises(ValueError, match="pos_embed='sam'"):
        authors_neck(pos_embed='random').set_pos_embed_layer(sam_pe())
    with pytest.raises(ValueError, match='pos_embed'):
        authors_neck(pos_embed='learned')


def test_filter_cfg_types():
    neck = authors_neck()
    assert not neck.logit_bias.requires_grad
    assert neck.log_scale_gain is None
    learned = authors_neck(filter_cfg=dict(type='learned'))
    assert learned.logit_bias.requires_grad and learned.log_scale_gain is None
    assert learned.logit_bias.item() == -10.0
    gain = authors_neck(filter_cfg=dict(type='learned', gain=True))
    assert gain.log_scale_gain.requires_grad
    calibrated = authors_neck(filter_cfg=dict(type='calibrated'))
    assert calibrated.filter_cfg == dict(
        type='calibrated', init_bias=-10.0, std=2.0)
    with pytest.raises(ValueError, match="one of \\['backbone'"):
        authors_neck(filter_cfg=dict(type='fixed'))
    with pytest.raises(ValueError, match=r"takes \['init_bias'\]"):
        authors_neck(filter_cfg=dict(type='backbone', std=2.0))


def test_backbone_filter_without_logit_bias():
    """A backbone without ``logit_bias`` (CLIP) under ``type='backbone'``:
    ``b`` is the fixed ``init_bias``."""
    neck = authors_neck(filter_cfg=dict(type='backbone', init_bias=-1.0))
    neck.set_pos_embed_layer(sam_pe())
    f = feats()
    del f['logit_bias']
    with torch.no_grad():
        g = neck(dict(f))['global_logits']
    V = F.normalize(f['img_feats'], dim=1)
    t = F.normalize(f['text_global'], dim=1)
    expected = 30. * torch.einsum('bchw,bc->bhw', V, t) - 1.0
    torch.testing.assert_close(g, expected, atol=1e-4, rtol=1e-4)


def clip_like_feats(B=2, L=6, mean_cos=0.2, spread=0.03):
    """Features whose patch-text cosines cluster like trained CLIP's."""
    torch.manual_seed(5)
    t = F.normalize(torch.randn(B, D), dim=-1)
    T = F.normalize(t[:, None] + 0.2 * torch.randn(B, L, D), dim=-1)
    noise = F.normalize(torch.randn(B, D, h, h), dim=1)
    cos = mean_cos + spread * torch.randn(B, 1, h, h)
    V = cos * t[:, :, None, None] + (1 - cos**2).sqrt() * (
        noise - (noise * t[:, :, None, None]).sum(1, keepdim=True) *
        t[:, :, None, None])
    return dict(
        img_feats=V,
        text_feats=T,
        text_global=t,
        text_mask=torch.ones(B, L, dtype=torch.bool),
        logit_scale=torch.tensor(100.))


def filter_logits(neck, f):
    """Local and global filter logits, pooled (what calibration targets)."""
    V = F.normalize(f['img_feats'], dim=1)
    s = f['logit_scale'] * neck.log_scale_gain.exp()
    local = torch.einsum('bdhw,bld->blhw', V, f['text_feats'])
    glob = torch.einsum('bdhw,bd->bhw', V, f['text_global'])
    return s * torch.cat([local.flatten(), glob.flatten()]) + neck.logit_bias


def test_clip_scale_and_bias_start_saturated_and_calibration_fixes_it():
    f = clip_like_feats()
    plain = authors_neck(
        pos_embed='random', exclude_sot=True,
        filter_cfg=dict(type='learned')).train()
    with torch.no_grad():
        g = plain(f)['global_map']
    saturated = ((g < 0.01) | (g > 0.99)).float().mean()
    assert saturated > 0.5  # most positions get (almost) no gradient

    neck = authors_neck(
        pos_embed='random', filter_cfg=dict(type='calibrated',
                                            std=2.0)).train()
    assert not neck.filters_calibrated
    with torch.no_grad():
        g = neck(f)['global_map']
        logits = filter_logits(neck, f)
    assert neck.filters_calibrated
    assert abs(float(logits.mean())) < 0.3
    assert abs(float(logits.std()) - 2.0) < 0.3
    assert ((g < 0.01) | (g > 0.99)).float().mean() < 0.05
    # once only: a second batch with other statistics changes nothing
    gain, bias = neck.log_scale_gain.clone(), neck.logit_bias.clone()
    with torch.no_grad():
        neck(clip_like_feats(mean_cos=0.3))
    assert torch.equal(gain, neck.log_scale_gain)
    assert torch.equal(bias, neck.logit_bias)
    # the state travels with the checkpoint: a loaded neck does not redo it
    fresh = authors_neck(
        pos_embed='random', filter_cfg=dict(type='calibrated')).train()
    fresh.load_state_dict(neck.state_dict())
    with torch.no_grad():
        fresh(clip_like_feats(mean_cos=0.3))
    assert torch.equal(fresh.logit_bias, bias)


def test_calibration_waits_for_training():
    neck = authors_neck(
        pos_embed='random', filter_cfg=dict(type='calibrated')).eval()
    with torch.no_grad():
        neck(clip_like_feats())
    assert not neck.filters_calibrated


def test_default_neck_is_the_authors_prompter():
    """``TextFilterNeck()`` (no arguments) computes the authors' prompter
    for SigLIP so400m and SAM: 1152-d features on the 27x27 grid, 256-d
    prompts, 49 sparse tokens and a 256x256 dense prompt, equal to
    :func:`reference` with the same weights."""
    init_default_scope('mmseg')
    torch.manual_seed(0)
    neck = with_random_norms(MODELS.build(dict(type='TextFilterNeck')))
    pe = sam_pe(256)
    neck.set_pos_embed_layer(pe)
    f = feats(B=2, L=5, dims=1152, grid=27)
    with torch.no_grad():
        out = neck(f)
        ref_sparse, ref_dense = reference(f, neck, pe, (256, 256))
    assert out['sparse_prompts'].shape == (2, 49, 256)
    assert out['dense_prompts'].shape == (2, 1, 256, 256)
    torch.testing.assert_close(
        out['sparse_prompts'], ref_sparse, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out['dense_prompts'], ref_dense, atol=1e-4, rtol=1e-4)
    # nothing of the filters is learnt in the neck
    assert not neck.logit_bias.requires_grad and neck.log_scale_gain is None


@pytest.mark.parametrize('key', ['pos_embd', 'init_bias', 'learnable_bias'])
def test_unknown_arguments_are_refused(key):
    """Arguments outside the signature (filter settings go in filter_cfg)
    are Python's own TypeError, raised through the registry."""
    init_default_scope('mmseg')
    with pytest.raises(TypeError, match=key):
        MODELS.build(dict(type='TextFilterNeck', **{key: 1}))
