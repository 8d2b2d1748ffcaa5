"""RSRefSeg segmentor with tiny components (fake and real CLIP backbone)."""
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from helpers import TINY_SAM, referring_samples

D, C = 16, TINY_SAM['prompt_embed_dim']
LORA = dict(mode='lora', rank=4, alpha=4, drop_rate=0.0)


@MODELS.register_module(force=True)
class FakeCLIPBackboneForTest(nn.Module):
    """The backbone contract (``encode_image``, ``encode_text``,
    ``logit_outputs``) from a patchify conv and a character embedding;
    records the texts it was given."""

    def __init__(self, dims=D, length=12, patch=32, image_size=64):
        super().__init__()
        self.image_size = image_size
        self.patch = nn.Conv2d(3, dims, patch, stride=patch)
        self.chars = nn.Embedding(128, dims)
        self.length = length
        self.logit_scale = nn.Parameter(torch.tensor(10.).log())
        self.seen_texts = None

    def encode_image(self, inputs):
        x = nn.functional.interpolate(inputs / 255., size=self.image_size)
        img = self.patch(x)
        return img.mean((2, 3)), img

    def encode_text(self, texts, device=None):
        self.seen_texts = list(texts)
        ids = torch.zeros(len(texts), self.length, dtype=torch.long)
        mask = torch.zeros(len(texts), self.length, dtype=torch.bool)
        for i, t in enumerate(texts):
            codes = [1] + [ord(c) % 128 for c in t][:self.length - 2] + [2]
            ids[i, :len(codes)] = torch.tensor(codes)
            mask[i, :len(codes)] = True
        tok = self.chars(ids.to(device))
        mask = mask.to(device)
        sentence = (tok * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return sentence, tok, mask

    def logit_outputs(self):
        return dict(logit_scale=self.logit_scale.exp())


def model_cfg(backbone=None, **kwargs):
    cfg = dict(
        type='RSRefSeg',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=None,
            std=None,
            bgr_to_rgb=True,
            size=(64, 64),
            pad_val=0,
            seg_pad_val=255),
        backbone=backbone or dict(type='FakeCLIPBackboneForTest'),
        neck=dict(  # the CLIP variant's prompter
            type='TextFilterNeck',
            in_channels=D,
            prompt_dims=C,
            dense_prompt_size=(32, 32),
            down_spatial_times=1,
            exclude_sot=True,
            filter_cfg=dict(type='learned', init_bias=-10.0),
            fuse_norm_act=False,
            final_proj=False,
            pos_embed='random'),
        decode_head=dict(
            type='SAMPromptHead', sam_arch=TINY_SAM, encoder_tuning=LORA),
        test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    return cfg


def build(**kwargs):
    torch.manual_seed(0)
    init_default_scope('mmseg')
    return MODELS.build(model_cfg(**kwargs))


def batch(B=2, size=64, ori=(80, 100), texts=None):
    samples = referring_samples(
        B,
        size,
        box=(10, 30, 20, 40),
        texts=texts,
        ori_shape=ori,
        ignore_rows=2,
        with_img_path=True)
    torch.manual_seed(3)
    return torch.rand(B, 3, size, size) * 255, samples


def test_loss_mode_batch_and_backward():
    model = build().train()
    inputs, samples = batch(B=3)
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert model.backbone.seen_texts == [s.text for s in samples]
    losses['decode.loss_ce'].backward()
    for part in (model.backbone.patch, model.neck.fuse,
                 model.decode_head.mask_decoder.output_upscaling):
        assert all(p.grad is not None for p in part.parameters())
    lora = [
        p for n, p in model.decode_head.image_encoder.named_parameters()
        if 'lora_down' in n
    ]
    assert lora and all(p.grad is not None for p in lora)


def test_filter_loss_off_by_default_and_weighted():
    """filter_loss_weight > 0 adds a BCE of the global filter logits against
    the target mask pooled onto the filter grid (ignored pixels left out)."""
    inputs, samples = batch(B=2)
    assert build().filter_loss_weight == 0
    model = build(filter_loss_weight=2.0).train()
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {
        'decode.loss_ce', 'decode.acc_seg', 'filter.loss_bce'
    }
    # reference: 2x2 grid (64 px input, patch 32)
    feats = model.extract_feat(inputs, [s.metainfo for s in samples])
    logits = feats['global_logits']
    assert logits.shape == (2, 2, 2)
    gt = torch.stack([s.gt_sem_seg.data for s in samples])[:, 0]
    want = []
    for b in range(2):
        for i in range(2):
            for j in range(2):
                cell = gt[b, 32 * i:32 * i + 32, 32 * j:32 * j + 32]
                valid = cell != 255
                share = float(valid.float().mean())
                target = float((cell == 1).float().sum() / valid.sum())
                bce = nn.functional.binary_cross_entropy_with_logits(
                    logits[b, i, j], torch.tensor(target))
                want.append((share, share * bce))
    ref = sum(w for _, w in want) / sum(s for s, _ in want)
    assert torch.allclose(losses['filter.loss_bce'], 2.0 * ref, rtol=1e-5)
    # the loss reaches the text tower through the filter
    model.zero_grad()
    losses['filter.loss_bce'].backward()
    assert model.backbone.chars.weight.grad.abs().sum() > 0
    assert model.backbone.patch.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='filter_loss_weight'):
        build(filter_loss_weight=-1.0)


def test_predict_mode_original_size():
    model = build().eval()
    inputs, samples = batch(B=2, ori=(80, 100))
    with torch.no_grad():
        out = model(inputs, samples, mode='predict')
    assert len(out) == 2
    for ds in out:
        pred = ds.pred_sem_seg.data
        assert pred.shape == (1, 80, 100)
        assert set(pred.unique().tolist()) <= {0, 1}
        prob = ds.seg_logits.data
        assert prob.min() >= 0 and prob.max() <= 1
        assert torch.equal(pred.bool(), prob > 0.5)


def test_tensor_mode():
    model = build().eval()
    inputs, samples = batch(B=2)
    with torch.no_grad():
        out = model(inputs, samples, mode='tensor')
    assert out.shape == (2, 1, 32, 32)
    # a different expression changes the mask
    _, other = batch(B=2, texts=['a long grey bridge', 'water'])
    with torch.no_grad():
        out2 = model(inputs, other, mode='tensor')
    assert (out - out2).abs().max() > 1e-5


def test_texts_are_required():
    model = build()
    inputs, samples = batch(B=1)
    with pytest.raises(ValueError, match='text'):
        model(inputs, None, mode='tensor')
    del samples[0].text
    with pytest.raises(ValueError, match="img_0.jpg has no 'text'"):
        model(inputs, samples, mode='loss')


def test_unsupported_options():
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        build(test_cfg=dict(mode='tiles'))
    with pytest.raises(ValueError, match='crop_size'):
        build(test_cfg=dict(mode='slide', stride=(16, 16)))
    with pytest.raises(ValueError, match='stride'):
        build(test_cfg=dict(mode='slide', crop_size=(32, 32), stride=(0, 8)))
    with pytest.raises(ValueError, match='gaps'):
        build(test_cfg=dict(mode='slide', crop_size=(32, 32), stride=(48, 8)))
    with pytest.raises(ValueError, match='window_batch'):
        build(
            test_cfg=dict(
                mode='slide',
                crop_size=(32, 32),
                stride=(16, 16),
                window_batch=0))
    with pytest.raises(ValueError, match='auxiliary'):
        build(auxiliary_head=dict(type='FCNHead'))


def test_data_preprocessor_flow():
    """uint8 BGR images of another size -> preprocessor -> loss."""
    model = build().train()
    _, samples = batch(B=2)
    imgs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)] * 2
    data = model.data_preprocessor(
        dict(inputs=imgs, data_samples=samples), True)
    assert data['inputs'].max() > 1  # pixel values, not normalised
    assert torch.equal(data['inputs'][0, 0], imgs[0][2].float())  # BGR->RGB
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['decode.loss_ce'])


def test_parameter_counts_logged():
    logger = MMLogger.get_instance('rsrefseg_param_test')
    records = []
    handler = __import__('logging').Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    try:
        MMLogger._instance_dict.move_to_end('rsrefseg_param_test')
        model = build()
    finally:
        logger.removeHandler(handler)
    assert any('RSRefSeg parameters' in r and 'decode_head.image_encoder' in r
               for r in records)
    counts = model.parameter_counts()
    assert counts['all'][1] == sum(counts[c][1] for c in ('backbone', 'neck',
                                                          'decode_head'))
    enc_t, enc_n = counts['decode_head.image_encoder']
    assert 0 < enc_t < enc_n  # LoRA: a few trainable parameters


def test_with_real_tiny_clip_backbone():
    clip = dict(
        type='CLIPBackbone',
        arch=dict(
            image_size=64,
            patch_size=16,
            embed_dims=32,
            num_layers=1,
            num_heads=2,
            output_dims=D,
            text_embed_dims=32,
            text_num_layers=1,
            text_num_heads=2,
            context_length=77,
            vocab_size=49408),
        checkpoint=None,
        image_tuning=dict(mode='lora', rank=2, alpha=2, drop_rate=0.),
        text_tuning=dict(mode='frozen'))
    model = build(backbone=clip).train()
    inputs, samples = batch(B=2)
    losses = model(inputs, samples, mode='loss')
    losses['decode.loss_ce'].backward()
    for name, p in model.named_parameters():
        if name.startswith('backbone.text'):
            assert not p.requires_grad, name
        elif name.startswith(('backbone.visual', 'decode_head.image_encoder')):
            assert p.requires_grad == ('lora_' in name), name
        elif name.startswith(('neck.', 'decode_head.mask_decoder',
                              'decode_head.prompt_encoder')):
            assert p.requires_grad, name
    model.eval()
    with torch.no_grad():
        out = model(inputs, samples, mode='predict')
    assert out[0].pred_sem_seg.shape == (80, 100)


def test_init_weights_keeps_sam_weights():
    """The runner calls init_weights after __init__ (where SAM is loaded)."""
    model = build()
    before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    model.init_weights()
    for k, v in model.decode_head.state_dict().items():
        assert torch.equal(v, before[k]), k
