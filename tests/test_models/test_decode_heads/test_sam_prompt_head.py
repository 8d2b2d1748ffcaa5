"""SAMPromptHead: parity with segment-anything, tuning, losses, prediction."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.decode_heads import SAMPromptHead
from rsrefseg_mm.models.sam.sam_fast_attention import SAMFastAttention
from helpers import TINY_SAM, assert_close_to_reference, referring_samples

LORA = dict(
    mode='lora',
    rank=4,
    alpha=4,
    drop_rate=0.1,
    targets=['qkv', 'proj', 'lin1', 'lin2'])


def tiny_head(**kwargs):
    torch.manual_seed(0)
    cfg = dict(type='SAMPromptHead', sam_arch=TINY_SAM, encoder_tuning=LORA)
    cfg.update(kwargs)
    init_default_scope('mmseg')
    return MODELS.build(cfg)


def head_inputs(B=2, size=96, n_prompts=4, dim=32, dense=True):
    torch.manual_seed(1)
    return dict(
        images=torch.rand(B, 3, size, size) * 255,
        sparse_prompts=torch.randn(B, n_prompts, dim),
        dense_prompts=torch.randn(B, 1, 32, 32) if dense else None)


def samples(B, size, ignore=True):
    return referring_samples(
        B,
        size,
        box=(size // 4, size // 2, size // 4, size // 2),
        texts=[f't{i}' for i in range(B)],
        ignore_rows=4 if ignore else 0)


def test_parity_with_segment_anything_vit_b(tmp_path):
    """Official-layout vit_b checkpoint: same masks as segment-anything's Sam
    for the same image, sparse and dense prompts (fast attention + LoRA)."""
    from segment_anything import sam_model_registry
    torch.manual_seed(0)
    sam = sam_model_registry['vit_b'](checkpoint=None)
    with torch.no_grad():  # random-init rel_pos are zeros: make them count
        for name, p in sam.named_parameters():
            if 'rel_pos' in name:
                p.normal_(std=0.02)
    path = tmp_path / 'sam_vit_b_random.pth'
    torch.save(sam.state_dict(), path)
    head = SAMPromptHead(
        sam_arch='vit_b', checkpoint=str(path), fast_attn=True).eval()
    torch.manual_seed(2)
    image = torch.rand(1, 3, 1024, 1024) * 255
    sparse = torch.randn(1, 3, 256)
    dense = torch.randn(1, 1, 256, 256)
    captured = []
    head.image_encoder.neck.register_forward_hook(
        lambda m, i, o: captured.append(o))
    with torch.no_grad():
        ours = head(
            dict(images=image, sparse_prompts=sparse, dense_prompts=dense))
        emb = sam.image_encoder(sam.preprocess(image[0]).unsqueeze(0))
        _, dense_emb = sam.prompt_encoder(points=None, boxes=None, masks=dense)
        theirs, _ = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_emb,
            multimask_output=False)
    assert ours.shape == theirs.shape == (1, 1, 256, 256)
    # relative to the size of the outputs (an absolute bound would pass on
    # near-zero outputs): |ours - theirs| <= NETWORK_RTOL * max |theirs|
    outputs = dict(mask_logits=(ours, theirs), embedding=(captured[0], emb))
    for what, (a, b) in outputs.items():
        scale = b.abs().max().item()
        rel = (a - b).abs().max().item() / scale
        print(f'SAM vit_b {what}: max |diff| / max |ref| = {rel:.2e} '
              f'(max |ref| {scale:.3g})')
        assert scale > 1e-2, f'{what}: a trivial output was compared'
        assert_close_to_reference(a, b, what=what)


def test_forward_shapes_and_dense_branch():
    head = tiny_head().eval()
    with torch.no_grad():
        out = head(head_inputs())
        assert out.shape == (2, 1, 32, 32)
        no_dense = head(head_inputs(dense=False))
    assert no_dense.shape == (2, 1, 32, 32)
    assert (out - no_dense).abs().max() > 1e-4
    with pytest.raises(ValueError, match='dense prompts must be'):
        x = head_inputs()
        x['dense_prompts'] = torch.randn(2, 1, 16, 16)
        head(x)
    with pytest.raises(ValueError, match='sparse prompts'):
        x = head_inputs()
        x['sparse_prompts'] = torch.randn(2, 4, 8)
        head(x)


def test_image_resize_and_normalisation():
    head = tiny_head()
    x = torch.full((1, 3, 50, 70), 255.)
    y = head.preprocess(x)
    assert y.shape == (1, 3, 128, 128)
    expected = (255 - head.pixel_mean) / head.pixel_std
    assert torch.allclose(y[0, :, 0, 0], expected.flatten())


def test_lora_trainable_parameters():
    head = tiny_head()
    assert not hasattr(head, 'conv_seg')
    assert all(
        type(b.attn) is SAMFastAttention for b in head.image_encoder.blocks)
    for name, p in head.image_encoder.named_parameters():
        assert p.requires_grad == ('lora_' in name), name
    assert any('lora_' in n for n, _ in head.image_encoder.named_parameters())
    assert all(p.requires_grad for p in head.prompt_encoder.parameters())
    assert all(p.requires_grad for p in head.mask_decoder.parameters())


def test_init_weights_keeps_loaded_weights(tmp_path):
    head = tiny_head()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head.init_weights()
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_frozen_encoder_keeps_no_graph():
    head = tiny_head(encoder_tuning=dict(mode='frozen'))
    assert not any(p.requires_grad for p in head.image_encoder.parameters())
    emb = head.encode_image(torch.rand(1, 3, 64, 64) * 255)
    assert emb.grad_fn is None and not emb.requires_grad
    out = head(head_inputs(B=1))
    assert out.requires_grad  # decoder still trains
    lora = tiny_head()
    assert lora.encode_image(torch.rand(1, 3, 64, 64) * 255).requires_grad


def test_with_cp_same_output_and_grads():
    plain = tiny_head(encoder_tuning=dict(mode='full')).train()
    ckpt = tiny_head(encoder_tuning=dict(mode='full'), with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = head_inputs(B=1)
    a, b = plain(x), ckpt(x)
    assert torch.allclose(a, b, atol=1e-6)
    a.sum().backward()
    b.sum().backward()
    ga = plain.image_encoder.blocks[0].attn.qkv.weight.grad
    gb = ckpt.image_encoder.blocks[0].attn.qkv.weight.grad
    assert torch.allclose(ga, gb, atol=1e-5)


def test_rel_pos_modes_same_output_and_grads():
    """rel_pos_mode reaches every block; 'mask' and 'augmented' train alike
    (the encoder's rel-pos tables are trained here, so they get grads)."""
    heads = {
        mode: tiny_head(encoder_tuning=dict(mode='full'),
                        rel_pos_mode=mode).train()
        for mode in ('mask', 'augmented')
    }
    heads['augmented'].load_state_dict(heads['mask'].state_dict())
    for mode, head in heads.items():
        assert all(b.attn.rel_pos_mode == mode
                   for b in head.image_encoder.blocks)
        with torch.no_grad():
            for b in head.image_encoder.blocks:  # random init: zeros
                torch.manual_seed(0)
                b.attn.rel_pos_h.normal_()
                b.attn.rel_pos_w.normal_()
    x = head_inputs(B=1)
    a, b = heads['mask'](x), heads['augmented'](x)
    assert torch.allclose(a, b, atol=1e-4)
    a.sum().backward()
    b.sum().backward()
    for name in ('rel_pos_h', 'qkv.weight'):
        ga = heads['mask'].image_encoder.blocks[-1].attn.get_parameter(name)
        gb = heads['augmented'].image_encoder.blocks[-1].attn.get_parameter(
            name)
        assert torch.allclose(ga.grad, gb.grad, atol=1e-4, rtol=1e-3), name


def test_loss_binary_with_ignore():
    head = tiny_head(loss_decode=[
        dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            avg_non_ignore=True,
            loss_weight=5.0),
        dict(type='DiceLoss', loss_weight=1.0)
    ])
    size = 64
    data_samples = samples(2, size)
    logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    losses = head.loss_by_feat(logits, data_samples)
    assert set(losses) == {'loss_ce', 'loss_dice', 'acc_seg'}
    # manual reference: BCE averaged over non-ignored pixels, times 5
    up = torch.nn.functional.interpolate(
        logits, size=(size, size), mode='bilinear', align_corners=False)[:, 0]
    gt = torch.stack([d.gt_sem_seg.data[0] for d in data_samples])
    valid = gt != 255
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        up[valid], gt[valid].float())
    assert torch.allclose(losses['loss_ce'], 5 * bce, atol=1e-5)
    prob = up.sigmoid() * valid
    tgt = ((gt == 1) & valid).float()
    dice = 1 - 2 * (prob * tgt).flatten(1).sum(1) / (
        prob.square().flatten(1).sum(1) + tgt.flatten(1).sum(1) + 2e-3)
    assert torch.allclose(losses['loss_dice'], dice.mean(), atol=1e-4)
    acc = (((up.sigmoid() > 0.5).long() == gt) & valid).sum() / valid.sum()
    assert torch.allclose(losses['acc_seg'], acc * 100, atol=1e-3)
    (losses['loss_ce'] + losses['loss_dice']).backward()
    assert logits.grad.abs().sum() > 0


def test_loss_ignores_ignored_pixels():
    head = tiny_head()
    data_samples = samples(1, 32)  # top 4 rows ignored
    logits = torch.randn(1, 1, 32, 32)
    a = head.loss_by_feat(logits, data_samples)['loss_ce']
    changed = logits.clone()
    changed[:, :, :3] = 50.  # only rows well inside the ignored band
    b = head.loss_by_feat(changed, data_samples)['loss_ce']
    assert torch.allclose(a, b)
    changed[:, :, 20:] = 50.
    c = head.loss_by_feat(changed, data_samples)['loss_ce']
    assert not torch.allclose(a, c)


def test_loss_and_predict_entry_points():
    head = tiny_head()
    x = head_inputs(B=2, size=64)
    losses = head.loss(x, samples(2, 64), train_cfg=None)
    assert losses['loss_ce'].requires_grad
    metas = [d.metainfo for d in samples(2, 64)]
    pred = head.predict(x, metas, test_cfg=None)
    assert pred.shape == (2, 1, 64, 64)
    with pytest.raises(RuntimeError):
        head.cls_seg(torch.zeros(1))


@pytest.mark.parametrize('key', ['num_classes', 'multimask_output'])
def test_fixed_settings_are_not_arguments(key):
    """One binary mask per expression: num_classes / out_channels / the
    mask count are not arguments (Python's own TypeError)."""
    with pytest.raises(TypeError, match=key):
        tiny_head(**{key: 2})
    head = tiny_head()
    assert (head.num_classes, head.out_channels) == (2, 1)


def test_bad_config():
    with pytest.raises(FileNotFoundError, match='sam_vit_b_01ec64'):
        tiny_head(checkpoint='does/not/exist.pth')
    with pytest.raises(ValueError, match='rel_pos_mode'):
        tiny_head(rel_pos_mode='flash')
    with pytest.raises(ValueError, match='needs fast_attn'):
        tiny_head(fast_attn=False, rel_pos_mode='mask')
