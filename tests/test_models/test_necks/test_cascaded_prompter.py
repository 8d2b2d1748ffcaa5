"""CascadedPrompter (RSRefSeg 2) against the authors' prompter rebuilt at
tiny size (fixtures/rsrefseg2_prompter_reference.py): their weights through
the key map, the same inputs, equal outputs and losses."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.necks.cascaded_prompter import (
    DENSE_PROMPT_CONFIG, PROMPT_ORDER, QUERY1_IMG_ORDER, QUERY_TEXT_ORDER,
    authors_prompter_key_map, text_pool_queries)
from helpers import assert_close_to_reference, load_script

REF = load_script('tests/test_models/test_necks/fixtures/'
                  'rsrefseg2_prompter_reference.py')
D, C, GRID, L, MASK = 24, 16, 8, 7, 32

#: The authors' RRSIS-D prompter config at tiny sizes, and two variants
#: that reach the other branches (learnt / zero initial tokens, sine and no
#: image encoding, a resized learnt encoding, the dense prompt from an
#: extra prompt token or the pooled queries, 'clipfeat', 'postup').
VARIANTS = dict(
    rrsisd=dict(),
    prompt_token=dict(
        text_query_config=dict(has_pe=False, init_type='learnable'),
        imgpe_config=dict(type='sine'),
        dense_prompt_config=dict(
            proj_from='prompt',
            has_internal_proj=True,
            featmap_from='clipfeat',
            has_internal_conv=False,
            up_strategy='postup')),
    pooled_queries=dict(
        text_query_config=dict(has_pe=True, init_type='zero'),
        prompt_config=dict(has_pe=True, init_type='zero'),
        imgpe_config=dict(type='learnable', size=6),
        queries1_to_img_attn_depth=1,
        dense_prompt_config=dict(
            proj_from='refined_text_queries2_pool',
            has_internal_proj=True,
            featmap_from='refined_clipfeat',
            has_internal_conv=True,
            up_strategy='preup')),
)


def authors_cfg(**over):
    cfg = dict(
        num_text_queries=3,
        text_query_config=dict(has_pe=True, init_type='textpool'),
        prompt_config=dict(has_pe=True, init_type='learnable'),
        text_feat_dim=D,
        two_queries_text_attn_depth=2,
        two_queries_text_attn_operation_order=list(QUERY_TEXT_ORDER),
        imgpe_config=dict(type='learnable', size=GRID),
        queries1_to_img_attn_depth=2,
        queries1_to_img_attn_operation_order=list(QUERY1_IMG_ORDER),
        prompt_queries2_img_attn_depth=2,
        prompt_feat_dim=C,
        prompt_queries2_img_attn_operation_order=list(PROMPT_ORDER),
        num_prompts=9,
        dense_prompt_config=dict(DENSE_PROMPT_CONFIG),
        img_feat_dim=D,
        num_heads=2,
        mlp_dim=32,
        internal_dim=16)
    cfg.update(over)
    return cfg


def randomise(module):
    """Non-trivial norms (a wrong or missing LayerNorm / BN shows)."""
    g = torch.Generator().manual_seed(5)
    norms = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)
    for m in module.modules():
        if isinstance(m, norms):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    return module


def pair(variant='rrsisd', **ours):
    """(authors' module, ours with their weights), eval mode."""
    torch.manual_seed(0)
    cfg = authors_cfg(**VARIANTS[variant])
    ref = randomise(REF.AuthorsCascadedPrompter(**cfg)).eval()
    head = {
        'decode_head.logit_scale2': torch.tensor(2.5),
        'decode_head.logit_bias2': torch.tensor(-0.4),
        'decode_head.logit_scale1': torch.tensor(0.),
        'decode_head.logit_bias1': torch.tensor(0.),
    }
    theirs = {f'prompter.{k}': v for k, v in ref.state_dict().items()}
    theirs.update(head)
    key_map = authors_prompter_key_map(theirs)
    state = {
        new[len('neck.'):]: theirs[old]
        for old, new in key_map.items() if new is not None
    }
    init_default_scope('mmseg')
    neck = MODELS.build(
        dict(type='CascadedPrompter', dense_prompt_size=MASK, **cfg, **ours))
    neck.load_state_dict(state, strict=True)
    return ref, neck.eval()


def inputs(B=3, lengths=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    for i, n in enumerate(lengths or []):
        mask[i, n:] = False
    return dict(
        img_feats=torch.randn(B, D, GRID, GRID, generator=g),
        text_feats=torch.randn(B, L, D, generator=g),
        text_global=torch.randn(B, D, generator=g),
        text_mask=mask,
        logit_scale=torch.tensor(10.),
        logit_bias=torch.tensor(-3.))


def run_ref(ref, f):
    return ref(f['img_feats'].flatten(2).transpose(1, 2), f['text_feats'],
               f['text_global'], f['logit_scale'].log(), f['logit_bias'], MASK)


def compare(out, exp, what):
    for ours, theirs in (('sparse_prompts', 'sparse_prompts'),
                         ('dense_prompts', 'dense_prompts'),
                         ('text_queries1', 'text_queries1'), ('text_queries2',
                                                              'text_queries2'),
                         ('refined_img_feats', 'refined_img_feat_map')):
        assert_close_to_reference(
            out[ours], exp[theirs], what=f'{what}: {ours}')


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_outputs_equal_the_authors_prompter(variant):
    ref, neck = pair(variant)
    f = inputs()
    with torch.no_grad():
        out, exp = neck(f), run_ref(ref, f)
    assert out['sparse_prompts'].shape == (3, 9, C)
    assert out['dense_prompts'].shape == (3, 1, MASK, MASK)
    compare(out, exp, variant)
    # the activation map is the dense prompt
    assert torch.equal(out['global_logits'], out['dense_prompts'][:, 0])
    assert torch.equal(out['global_map'], out['global_logits'].sigmoid())


def test_default_arguments_are_the_rrsisd_config():
    init_default_scope('mmseg')
    neck = MODELS.build(dict(type='CascadedPrompter'))
    assert neck.img_pos_embed.shape == (1, 1152, 32, 32)
    assert neck.prompt_embed.shape == (9, 256)
    assert neck.query_pos_embed1.shape == (3, 1152)
    assert not hasattr(neck, 'query_embed1')  # 'textpool' initial queries
    assert len(neck.query_text_layers) == len(neck.query1_img_layers) == \
        len(neck.prompt_layers) == 2
    assert neck.query_text_layers[0].operation_order == list(QUERY_TEXT_ORDER)
    attn = neck.prompt_layers[1].ops['cross_attn_prompt_img_1']
    assert attn.q_proj.weight.shape == (512, 256)
    assert attn.k_proj.weight.shape == (512, 1152)
    assert neck.dense_conv[0].weight.shape == (576, 1152, 3, 3)
    assert neck.sparse_mlp.layers[0].weight.shape == (512, 256)


def test_padding_is_left_out_unless_asked():
    """mask_text_padding=True: a padded expression gives what the authors'
    prompter gives on its tokens alone; False: what theirs gives on the
    padded input."""
    lengths = [7, 4, 2]
    f = inputs(lengths=lengths)
    ref, neck = pair()
    _, neck_unmasked = pair(mask_text_padding=False)
    with torch.no_grad():
        out = neck(f)
        compare(neck_unmasked(f), run_ref(ref, f), 'padded, unmasked')
        for i, n in enumerate(lengths):
            one = {
                k: v[i:i + 1] if v.dim() and k != 'logit_scale' else v
                for k, v in f.items()
            }
            one['text_feats'] = one['text_feats'][:, :n]
            one['text_mask'] = one['text_mask'][:, :n]
            exp = run_ref(ref, one)
            compare({k: v[i:i + 1]
                     for k, v in out.items()}, exp, f'expression {i}')
        # padding changes the authors' result: the test tells them apart
        diff = (neck_unmasked(f)['sparse_prompts'][1] -
                out['sparse_prompts'][1]).abs().max()
    assert diff > 1e-3


def test_text_pool_queries_are_adaptive_pool_bins_of_the_real_tokens():
    g = torch.Generator().manual_seed(2)
    T = torch.randn(4, 9, 5, generator=g)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    for i, n in enumerate([9, 5, 2, 1]):
        mask[i, :n] = True
    pooled = text_pool_queries(T, mask, 3)
    for i, n in enumerate([9, 5, 2, 1]):
        exp = torch.nn.functional.adaptive_avg_pool1d(
            T[i:i + 1, :n].transpose(1, 2), 3).transpose(1, 2)
        torch.testing.assert_close(pooled[i:i + 1], exp)


def samples(B, size=32, seed=4):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(B):
        gt = torch.zeros(1, size, size, dtype=torch.long)
        y, x = torch.randint(0, size - 12, (2, ), generator=g).tolist()
        gt[:, y:y + 6 + 2 * i, x:x + 10] = 1
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=gt)
        out.append(s)
    return out


@pytest.mark.parametrize('variant', ['rrsisd', 'prompt_token'])
def test_losses_equal_the_authors_extra_losses(variant):
    ref, neck = pair(variant)
    f, ds = inputs(B=4), samples(4)
    out, exp = neck(f), run_ref(ref, f)
    losses = neck.loss(out, ds)
    label = torch.stack([s.gt_sem_seg.data[0] for s in ds])
    theirs = REF.authors_extra_losses(exp, label, torch.tensor(2.5),
                                      torch.tensor(-0.4), (GRID, GRID))
    assert set(losses) == {'loss_query_sep', 'loss_region_text'}
    assert_close_to_reference(
        losses['loss_query_sep'], theirs['query'], what='query sep')
    assert_close_to_reference(
        losses['loss_region_text'], theirs['perbatch'], what='region text')
    sum(losses.values()).backward()
    first = neck.query_text_layers[0].ops['self_attn_query_query2']
    for p in (neck.region_text_logit_scale, first.q_proj.weight,
              neck.query_text_layers[1].ops['norm_query2_5'].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_region_text_loss_ignores_ignored_pixels_and_weights_switch_off():
    ref, neck = pair()
    f, ds = inputs(B=2), samples(2)
    with torch.no_grad():
        out = neck(f)
        base = neck.loss(out, ds)['loss_region_text']
        for s in ds:  # label 255 everywhere but the target: same regions
            s.gt_sem_seg.data[s.gt_sem_seg.data == 0] = 255
        assert torch.equal(neck.loss(out, ds)['loss_region_text'], base)
    init_default_scope('mmseg')
    off = MODELS.build(
        dict(
            type='CascadedPrompter',
            dense_prompt_size=MASK,
            query_sep_loss_weight=0,
            region_text_loss_weight=0,
            **authors_cfg()))
    assert off.loss(off(f), ds) == {}
    assert not hasattr(off, 'region_text_logit_scale')


def test_key_map_names_every_authors_key_and_rejects_unknown_ones():
    ref, neck = pair('pooled_queries')
    keys = [f'prompter.{k}' for k in ref.state_dict()]
    key_map = authors_prompter_key_map(keys + ['backbone.model.x'])
    assert 'backbone.model.x' not in key_map  # not the prompter's
    assert sorted(key_map.values()) == sorted(
        f'neck.{k}' for k in neck.state_dict()
        if not k.startswith('region_text'))
    assert key_map['prompter.two_queries_text_attn_layers.1.mlp_query1_2.'
                   'layers.0.weight'] == \
        'neck.query_text_layers.1.ops.mlp_query1_2.layers.0.weight'
    with pytest.raises(ValueError, match='prompter.extra'):
        authors_prompter_key_map(['prompter.extra'])
    with pytest.raises(ValueError, match='decode_head.conv_seg'):
        authors_prompter_key_map(['decode_head.conv_seg.weight'])


@pytest.mark.parametrize('over, match', [
    (dict(two_queries_text_attn_depth=0), 'two_queries_text_attn_depth'),
    (dict(queries1_to_img_attn_operation_order=['cross_attn_img_img_1']),
     "unknown operation 'cross_attn_img_img_1'"),
    (dict(queries1_to_img_attn_operation_order=['mlp_prompt_1']),
     "'prompt' stream"),
    (dict(prompt_queries2_img_attn_operation_order=['norm_img_1'] * 2),
     'repeats'),
    (dict(text_query_config=dict(has_pe=True, init_type='mean')), 'init_type'),
    (dict(dense_prompt_config=dict(proj_from='prompt')), 'has_internal_proj'),
    (dict(imgpe_config=dict(type='rope')), 'imgpe_config')
])
def test_bad_config_raises(over, match):
    init_default_scope('mmseg')
    cfg = dict(type='CascadedPrompter', **authors_cfg())
    cfg.update(over)
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def test_bad_inputs_raise():
    _, neck = pair()
    f = inputs()
    with pytest.raises(ValueError, match='img_feat_dim=24'):
        neck(dict(f, img_feats=f['img_feats'][:, :8]))
    with pytest.raises(KeyError, match='text_global'):
        neck({k: v for k, v in f.items() if k != 'text_global'})
    mask = f['text_mask'].clone()
    mask[1] = False
    with pytest.raises(ValueError, match=r'rows \[1\] have no token'):
        neck(dict(f, text_mask=mask))
    with pytest.raises(KeyError, match='logit_scale'):
        neck({k: v for k, v in f.items() if k != 'logit_scale'})
