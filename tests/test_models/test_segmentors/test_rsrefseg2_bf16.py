"""RSRefSeg 2 cast to bf16 as a whole, as DeepSpeed's ``bf16`` casts it (the
authors' runner): the tiny config with SAM and SAM 2.1 heads, and with
SigLIP 2 towers, computes its losses and gradients; SAM's positional
encodings keep their float32 values.
"""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.decode_heads.dtype_safe import \
    make_position_encodings_dtype_safe
from helpers import REPO, referring_batch
from siglip_helpers import TINY_SIGLIP2

TINY2 = REPO / 'configs' / 'rsrefseg2' / (
    'rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-'
    '128x128.py')
#: SAM 2.1 at test size: 128 px input, 8x8 embedding, prompt dim 32.
TINY_SAM2 = dict(
    encoder_embed_dim=8,
    encoder_num_heads=1,
    encoder_stages=(1, 1, 2, 1),
    encoder_global_attn_blocks=(3, ),
    image_size=128,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32)


def build(head, tokenizer=None):
    cfg = Config.fromfile(str(TINY2))
    if tokenizer is not None:  # SigLIP 2 towers (LoRA) at test size
        lora = dict(mode='lora', rank=4, alpha=4, drop_rate=0.0)
        cfg.model.backbone = dict(
            type='SigLIPBackbone',
            arch=TINY_SIGLIP2,
            checkpoint=None,
            tokenizer=tokenizer,
            image_tuning=lora,
            text_tuning=dict(lora, targets=['self_attn.q_proj', 'head']))
        cfg.model.neck.update(
            text_feat_dim=32,
            img_feat_dim=32,
            imgpe_config=dict(type='learnable', size=4))
    if head == 'sam2':
        cfg.model.decode_head = dict(
            type='SAM2PromptHead',
            sam2_arch=TINY_SAM2,
            checkpoint=None,
            encoder_tuning=dict(mode='full'),
            loss_decode=cfg.model.decode_head.loss_decode)
        cfg.model.neck.prompt_feat_dim = 32
        cfg.model.neck.dense_prompt_size = (32, 32)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('towers,head', [('clip', 'sam'), ('clip', 'sam2'),
                                         ('siglip2', 'sam2')])
def test_whole_model_bf16_trains(towers, head, gemma_spiece):
    tokenizer = gemma_spiece if towers == 'siglip2' else None
    model = build(head, tokenizer).to(torch.bfloat16).train()
    data = model.data_preprocessor(referring_batch(2), True)
    data['inputs'] = data['inputs'].to(torch.bfloat16)  # inputs_to_half
    losses = model(**data, mode='loss')
    assert {
        'decode.loss_ce', 'decode.loss_dice', 'neck.loss_query_sep',
        'neck.loss_region_text'
    } <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 for g in grads)
    # every stage learns: towers, prompter, SAM's decoder
    for part in (model.backbone, model.neck, model.decode_head.mask_decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in part.parameters())


def test_dtype_safe_position_encoding_is_unchanged_in_float32():
    torch.manual_seed(0)
    pe = PositionEmbeddingRandom(16)
    ref = pe((8, 8))
    assert make_position_encodings_dtype_safe(pe) == 1
    assert isinstance(pe, PositionEmbeddingRandom)
    assert make_position_encodings_dtype_safe(pe) == 0  # once
    assert torch.equal(pe((8, 8)), ref)
    pe.to(torch.bfloat16)
    out = pe((8, 8))
    assert out.dtype == torch.bfloat16
    # the Gaussian matrix rounded to bf16 (8 bits), times 2 pi, in sin / cos
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0)
