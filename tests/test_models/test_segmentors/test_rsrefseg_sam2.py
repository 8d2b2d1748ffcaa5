"""RSRefSeg with the SAM 2.1 head (SAM2PromptHead) on the tiny CLIP and
text-filter prompter of the demo config: a training step, prediction, the
encode-once decode, the image cache and the predictor."""
import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.decode_heads import SAM2PromptHead
from helpers import TINY_CONFIG, referring_batch

#: A 5-block Hiera of width 8, 32-channel SAM 2 decoder, 128 px input
#: (8x8 image embedding, 32x32 masks and dense prompt).
HEAD = dict(
    type='SAM2PromptHead',
    sam2_arch=dict(
        encoder_embed_dim=8,
        encoder_stages=(1, 1, 2, 1),
        encoder_global_attn_blocks=(3, ),
        image_size=128,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32),
    checkpoint=None,
    encoder_tuning=dict(mode='lora', rank=4, alpha=4),
    loss_decode=[
        dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            avg_non_ignore=True,
            loss_weight=5.0),
        dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0),
    ])

#: The RSRefSeg 2 prompter at these sizes (tower width 64, 8x8 grid).
CASCADED = dict(
    type='CascadedPrompter',
    text_feat_dim=64,
    img_feat_dim=64,
    prompt_feat_dim=32,
    num_heads=2,
    internal_dim=32,
    mlp_dim=64,
    imgpe_config=dict(type='learnable', size=8),
    dense_prompt_size=(32, 32))


def build(neck: str = 'text_filter'):
    cfg = Config.fromfile(TINY_CONFIG)
    if neck == 'cascaded':
        cfg.model.neck = ConfigDict(CASCADED)
    else:
        cfg.model.neck.prompt_dims = 32
        cfg.model.neck.dense_prompt_size = (32, 32)
        # the prompter reads the head's (SAM 2) positional encoding
        cfg.model.neck.pos_embed = 'sam'
    cfg.model.decode_head = ConfigDict(HEAD)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    return model


@pytest.mark.parametrize('neck', ['text_filter', 'cascaded'])
def test_train_step_and_predict(neck):
    model = build(neck).train()
    assert isinstance(model.decode_head, SAM2PromptHead)
    optim = OptimWrapper(
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                        lr=0.01))
    before = model.decode_head.mask_decoder.conv_s1.weight.detach().clone()
    log = model.train_step(referring_batch(2), optim)
    assert {'loss', 'decode.loss_ce', 'decode.loss_dice'} <= set(log)
    assert torch.isfinite(log['loss'])
    assert not torch.equal(before,
                           model.decode_head.mask_decoder.conv_s1.weight)

    model.eval()
    data = model.data_preprocessor(referring_batch(2), False)
    with torch.no_grad():
        results = model(**data, mode='predict')
        # encode once, decode each expression; the same as predict's path
        emb = model.encode_image(data['inputs'])
        texts = [s.metainfo['text'] for s in data['data_samples']]
        logits, _ = model.decode(emb, texts)
        direct = model.decode_head.forward(
            model.extract_feat(data['inputs'],
                               [s.metainfo for s in data['data_samples']]))
        model.test_cfg.group_by_image = True
        cached = model.encode_decode(
            data['inputs'], [s.metainfo for s in data['data_samples']])
        model.test_cfg.group_by_image = False
        plain = model.encode_decode(data['inputs'],
                                    [s.metainfo for s in data['data_samples']])
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 128, 128)
    assert {'image_embeddings', 'high_res_feats_s0', 'high_res_feats_s1'
            } <= set(emb)
    assert emb['high_res_feats_s0'].shape == (2, 4, 32, 32)
    assert logits.shape == (2, 1, 32, 32)
    torch.testing.assert_close(logits, direct)
    torch.testing.assert_close(cached, plain)
    assert model.image_encodings == 2


def test_referring_predictor_encodes_once():
    from rsrefseg_mm.apis import ReferringPredictor
    model = build().eval()
    predictor = ReferringPredictor(model)
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, (128, 128, 3), np.uint8))
    assert 'high_res_feats_s1' in predictor.embeddings
    first, second = predictor.predict(['the red circle', 'the white cross'])
    assert first.pred_sem_seg.data.shape == (1, 128, 128)
    alone = predictor.predict('the white cross')
    torch.testing.assert_close(alone.seg_logits.data, second.seg_logits.data)
