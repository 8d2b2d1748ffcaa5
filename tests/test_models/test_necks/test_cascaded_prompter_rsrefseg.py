"""RSRefSeg with the RSRefSeg 2 prompter (CascadedPrompter) on the tiny CLIP
and SAM of the demo config: loss terms, backward, predict, decode."""
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from helpers import TINY_CONFIG, referring_batch

#: The prompter at the demo's sizes: width 64 towers (8x8 CLIP grid), SAM
#: prompt dim 64 and 64x64 mask input.
NECK = dict(
    type='CascadedPrompter',
    text_feat_dim=64,
    img_feat_dim=64,
    prompt_feat_dim=64,
    num_heads=2,
    internal_dim=32,
    mlp_dim=64,
    imgpe_config=dict(type='learnable', size=8),
    dense_prompt_size=(64, 64))


def build():
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.neck = ConfigDict(NECK)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_loss_backward_and_predict():
    model = build().train()
    data = model.data_preprocessor(referring_batch(2), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {
        'decode.loss_ce', 'decode.loss_dice', 'decode.acc_seg',
        'neck.loss_query_sep', 'neck.loss_region_text', 'filter.loss_bce'
    }
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    neck = model.neck
    for p in (neck.prompt_embed, neck.img_pos_embed, neck.query_pos_embed1,
              neck.dense_conv[0].weight, neck.sparse_mlp.layers[1].weight,
              neck.region_text_logit_scale,
              neck.query1_img_layers[1].ops['norm_img_2'].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the towers learn through the prompts and the region-text term
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 128, 128)
    assert results[0].seg_logits.data.shape == (1, 128, 128)


def test_decode_returns_the_dense_prompt_as_activation_map():
    model = build().eval()
    data = model.data_preprocessor(referring_batch(1), False)
    with torch.no_grad():
        emb = model.encode_image(data['inputs'])
        logits, x = model.decode(emb, ['the red roof', 'the grey road'])
    assert logits.shape == (2, 1, 64, 64)
    assert x['sparse_prompts'].shape == (2, 9, 64)
    assert torch.equal(x['global_logits'], x['dense_prompts'][:, 0])
    assert x['global_map'].shape == (2, 64, 64)
    assert 0 <= float(x['global_map'].min()) <= float(
        x['global_map'].max()) <= 1
    # an expression's prompts do not depend on the other expressions
    with torch.no_grad():
        _, one = model.decode(emb, ['the grey road'])
    torch.testing.assert_close(one['sparse_prompts'][0],
                               x['sparse_prompts'][1])
