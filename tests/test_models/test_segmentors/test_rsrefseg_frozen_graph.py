"""Frozen towers keep no autograd graph inside the whole RSRefSeg model."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import rsrefseg_mm  # noqa: F401
from helpers import TINY_SAM, referring_samples

FROZEN = dict(mode='frozen')
LORA = dict(mode='lora', rank=2, alpha=2, drop_rate=0.)


def build(tuning):
    init_default_scope('mmseg')
    torch.manual_seed(0)
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
        backbone=dict(
            type='CLIPBackbone',
            arch=dict(
                image_size=64,
                patch_size=16,
                embed_dims=32,
                num_layers=1,
                num_heads=2,
                output_dims=16,
                text_embed_dims=32,
                text_num_layers=1,
                text_num_heads=2,
                context_length=16,
                vocab_size=49408),
            checkpoint=None,
            image_tuning=tuning,
            text_tuning=tuning),
        neck=dict(
            type='TextFilterNeck',
            in_channels=16,
            prompt_dims=32,
            dense_prompt_size=(32, 32),
            down_spatial_times=1),
        decode_head=dict(
            type='SAMPromptHead', sam_arch=TINY_SAM, encoder_tuning=tuning),
        test_cfg=dict(mode='whole'))
    return MODELS.build(cfg).train()


def batch(B=2, size=64):
    samples = referring_samples(B, size, box=(10, 30, 20, 40))
    torch.manual_seed(3)
    return torch.rand(B, 3, size, size) * 255, samples


def frozen_parts(model):
    """The towers RSRefSeg can freeze, as the modules whose forward runs."""
    enc = model.decode_head.image_encoder
    return dict(
        clip_image=[model.backbone.visual],
        clip_text=[model.backbone.text],
        sam_encoder=[enc.patch_embed, *enc.blocks, enc.neck])


def saved_tensors_per_part(model, inputs, samples):
    """Run the loss; count tensors autograd saves inside each tower."""
    current, counts = [None], {}
    for part, modules in frozen_parts(model).items():
        counts[part] = 0
        for m in modules:
            m.register_forward_pre_hook(
                lambda m, a, part=part: current.__setitem__(0, part))
            m.register_forward_hook(
                lambda m, a, o: current.__setitem__(0, None))

    def pack(t):
        if current[0] is not None:
            counts[current[0]] += 1
        return t

    outs = {}
    # the towers' outputs, as the prompter receives them
    model.neck.register_forward_pre_hook(
        lambda m, a: outs.__setitem__('clip', a[0]))
    model.decode_head.image_encoder.neck.register_forward_hook(
        lambda m, a, o: outs.__setitem__('sam', o))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model.loss(inputs, samples)
    return losses, counts, outs


@pytest.mark.parametrize('tuning,trained', [(FROZEN, False), (LORA, True)])
def test_frozen_towers_keep_no_graph(tuning, trained):
    model = build(tuning)
    inputs, samples = batch()
    losses, counts, outs = saved_tensors_per_part(model, inputs, samples)
    if trained:  # the probe works: LoRA towers do save activations
        assert all(n > 0 for n in counts.values()), counts
        assert outs['sam'].grad_fn is not None
        return
    assert counts == dict(clip_image=0, clip_text=0, sam_encoder=0)
    for key in ('img_feats', 'img_global', 'text_feats', 'text_global'):
        assert outs['clip'][key].grad_fn is None, key
    assert outs['sam'].grad_fn is None
    loss = losses['decode.loss_ce']
    loss.backward()  # prompter and SAM decoder still train
    assert any(p.grad is not None for p in model.neck.parameters())
    assert any(p.grad is not None
               for p in model.decode_head.mask_decoder.parameters())
    for name, p in model.named_parameters():
        if name.startswith(('backbone.', 'decode_head.image_encoder')):
            assert p.grad is None, name


def test_probe_sees_a_leaked_trainable_parameter():
    """One parameter left trainable in a frozen tower builds a graph there:
    the counter of the test above detects it."""
    model = build(FROZEN)
    model.decode_head.image_encoder.pos_embed.requires_grad_(True)
    model.backbone.visual.proj.requires_grad_(True)
    _, counts, outs = saved_tensors_per_part(model, *batch())
    assert counts['sam_encoder'] > 0 and counts['clip_image'] > 0
    assert counts['clip_text'] == 0
