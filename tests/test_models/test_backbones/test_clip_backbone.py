"""CLIPBackbone: parity with open_clip, weight files, tuning, shapes.

open_clip is the test-only reference (random weights, no download).
"""

import numpy as np
import open_clip  # test requirement (requirements/tests.txt): no skip
import pytest
import torch
from PIL import Image

from rsrefseg_mm.models.backbones import (CLIPBackbone,
                                          convert_clip_state_dict,
                                          is_torchscript_archive,
                                          resize_pos_embed)
from rsrefseg_mm.utils import state_dict_sha256
from helpers import assert_close_to_reference, load_script

TEXTS = [
    'the white airplane on the left', 'a storage tank near the bottom',
    'the vehicle &amp; its shadow', ' '.join(['very long expression'] * 40)
]
TINY_ARCH = dict(
    image_size=128,
    patch_size=16,
    embed_dims=64,
    num_layers=2,
    num_heads=2,
    output_dims=64,
    text_embed_dims=64,
    text_num_layers=2,
    text_num_heads=2,
    context_length=77,
    vocab_size=49408)
FROZEN = dict(mode='frozen')


def tiny_open_clip(seed: int = 0):
    """open_clip CLIP with TINY_ARCH, QuickGELU, all weights non-trivial."""
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=64,
        vision_cfg=dict(
            image_size=128, layers=2, width=64, head_width=32, patch_size=16),
        text_cfg=dict(
            context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        quick_gelu=True)
    return perturb(model)


def perturb(model, std: float = 0.02):
    """Make zero-initialised biases / unit LN weights random too."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def reference(model, images01, texts):
    """open_clip outputs: encode_image/encode_text + projected tokens."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (images01 - mean) / std
    tokens = open_clip.tokenize(texts)
    with torch.no_grad():
        img_global = model.encode_image(x)
        model.visual.output_tokens = True
        _, img_tokens = model.visual(x)
        model.visual.output_tokens = False
        img_tokens = img_tokens @ model.visual.proj
        text_global = model.encode_text(tokens)
        t = model.token_embedding(tokens) + model.positional_embedding
        t = model.ln_final(model.transformer(t, attn_mask=model.attn_mask))
        text_tokens = t @ model.text_projection
    return dict(
        img_global=img_global,
        img_tokens=img_tokens,
        text_global=text_global,
        text_tokens=text_tokens,
        tokens=tokens)


def max_diff(a, b):
    return (a - b).abs().max().item()


def check_parity(backbone, model, image_size, texts):
    torch.manual_seed(1)
    B = len(texts)
    images = torch.rand(B, 3, image_size, image_size)
    ref = reference(model, images, texts)
    with torch.no_grad():
        out = backbone(images * 255, texts)
    D = ref['img_global'].shape[-1]
    h = image_size // backbone.visual.patch_size
    assert out['img_feats'].shape == (B, D, h, h)
    assert out['text_feats'].shape == (B, 77, D)
    pairs = dict(
        img_global=(out['img_global'], ref['img_global']),
        img_feats=(out['img_feats'].flatten(2).transpose(1, 2),
                   ref['img_tokens']),
        text_global=(out['text_global'], ref['text_global']),
        text_feats=(out['text_feats'], ref['text_tokens']),
        logit_scale=(out['logit_scale'], model.logit_scale.exp()))
    for k, (a, b) in pairs.items():
        assert_close_to_reference(a, b, what=k)
    diffs = {k: max_diff(a, b) for k, (a, b) in pairs.items()}
    n_real = (ref['tokens'] != 0).sum(1)
    assert torch.equal(out['text_mask'].sum(1), n_real)
    return diffs


@pytest.mark.parametrize('name,batch', [('ViT-B-16', 2), ('ViT-L-14', 1)])
def test_parity_with_open_clip_state_dict(tmp_path, name, batch):
    """Plain open_clip/OpenAI-layout state dicts of the real archs."""
    torch.manual_seed(0)
    model = open_clip.create_model(
        name, pretrained=None, force_quick_gelu=True)
    model = perturb(model)
    sd = model.state_dict()
    assert 'visual.transformer.resblocks.0.attn.in_proj_weight' in sd
    assert 'token_embedding.weight' in sd  # OpenAI layout (text top-level)
    if name == 'ViT-L-14':  # halve the file size, like OpenAI's fp16 files
        sd = {k: v.half() for k, v in sd.items()}
        model.load_state_dict({k: v.float() for k, v in sd.items()})
    path = str(tmp_path / f'{name}.pth')
    torch.save(sd, path)
    del sd
    backbone = CLIPBackbone(
        arch=name, checkpoint=path, image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    assert not backbone._missing_keys and not backbone._unexpected_keys
    diffs = check_parity(backbone, model, 224, TEXTS[:batch])
    print(name, diffs)


@pytest.fixture(scope='module')
def tiny_archive(tmp_path_factory):
    """OpenAI-style fp16 TorchScript archive of a tiny CLIP."""
    model = tiny_open_clip()
    model.half()
    # OpenAI archives carry these metadata entries in their state dict
    del model.context_length, model.vocab_size  # plain int attributes here
    model.register_buffer('input_resolution', torch.tensor(128))
    model.register_buffer('context_length', torch.tensor(77))
    model.register_buffer('vocab_size', torch.tensor(49408))
    path = str(tmp_path_factory.mktemp('clip') / 'tiny-openai.pt')
    torch.jit.save(torch.jit.script(model), path)
    ref = tiny_open_clip()  # same seed -> same weights, fp16-rounded
    ref.load_state_dict({
        k: v.float()
        for k, v in model.state_dict().items()
        if k not in ('input_resolution', 'context_length', 'vocab_size')
    })
    return path, ref


def test_torchscript_archive_loads(tiny_archive):
    path, ref = tiny_archive
    assert is_torchscript_archive(path)
    backbone = CLIPBackbone(
        arch=TINY_ARCH,
        checkpoint=path,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    assert not backbone._missing_keys and not backbone._unexpected_keys
    assert backbone.visual.conv1.weight.dtype == torch.float32
    check_parity(backbone, ref, 128, TEXTS)


def test_converter_tool(tiny_archive, tmp_path):
    path, ref = tiny_archive
    dst = str(tmp_path / 'converted.pth')
    tool = load_script('tools/model_converters/clip2rsrefseg.py')
    tool.main([path, dst])
    assert not is_torchscript_archive(dst)
    ckpt = torch.load(dst, weights_only=True)
    sd = ckpt['state_dict']
    assert ckpt['meta']['state_dict_sha256'] == state_dict_sha256(sd)
    assert 'visual.transformer.resblocks.1.attn.qkv.weight' in sd
    assert 'text.token_embedding.weight' in sd
    assert 'input_resolution' not in sd
    assert all(v.dtype == torch.float32 for v in sd.values())
    backbone = CLIPBackbone(
        arch=TINY_ARCH,
        checkpoint=dst,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    check_parity(backbone, ref, 128, TEXTS[:2])


def test_convert_is_idempotent_and_drops_metadata():
    sd = {
        'module.visual.transformer.resblocks.0.attn.in_proj_weight': 1,
        'visual.transformer.resblocks.0.attn.out_proj.bias': 2,
        'transformer.resblocks.3.attn.in_proj_bias': 3,
        'logit_scale': 4,
        'input_resolution': 5,
    }
    out, dropped = convert_clip_state_dict({'state_dict': sd})
    assert dict(out) == {
        'visual.transformer.resblocks.0.attn.qkv.weight': 1,
        'visual.transformer.resblocks.0.attn.proj.bias': 2,
        'text.transformer.resblocks.3.attn.qkv.bias': 3,
        'logit_scale': 4
    }
    assert dropped == ['input_resolution']
    assert convert_clip_state_dict(out)[0] == out


def test_wrong_arch_is_clear_error(tmp_path):
    path = str(tmp_path / 'tiny.pth')
    torch.save(tiny_open_clip().state_dict(), path)
    other = dict(TINY_ARCH, embed_dims=96, num_heads=3)
    with pytest.raises(ValueError) as e:
        CLIPBackbone(
            arch=other,
            checkpoint=path,
            image_tuning=FROZEN,
            text_tuning=FROZEN)
    msg = str(e.value)
    assert path in msg and "'custom'" in msg
    assert 'file (64,' in msg and 'vs model (96,' in msg
    assert 'width 64, patch 16, image 128' in msg  # what the file holds
    with pytest.raises(ValueError, match='no CLIP weights'):
        torch.save({'image_encoder.x': torch.zeros(1)}, path)
        CLIPBackbone(arch=TINY_ARCH, checkpoint=path)


def test_missing_file_says_what_to_download():
    with pytest.raises(FileNotFoundError) as e:
        CLIPBackbone(arch=TINY_ARCH, checkpoint='checkpoints/nope.pt')
    msg = str(e.value)
    assert 'checkpoints/nope.pt' in msg and 'ViT-B-16.pt' in msg
    assert 'checkpoints/' in msg and 'openaipublic' in msg


def test_bad_arch():
    with pytest.raises(ValueError, match='unknown CLIP arch'):
        CLIPBackbone(arch='ViT-H/14')
    with pytest.raises(ValueError, match='missing keys'):
        CLIPBackbone(arch=dict(image_size=128))


def lora_cfg():
    return dict(mode='lora', rank=4, alpha=4, drop_rate=0.1)


def test_lora_only_lora_params_train():
    torch.manual_seed(0)
    backbone = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=lora_cfg(), text_tuning=lora_cfg())
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all('lora_' in n for n in trainable)
    # qkv + proj in 2 blocks x 2 towers, down + up each
    assert len(trainable) == 2 * 2 * 2 * 2
    assert any('visual.transformer.resblocks.0.attn.qkv.lora_down' in n
               for n in trainable)
    assert any('text.transformer.resblocks.1.attn.proj.lora_up' in n
               for n in trainable)
    # full state dict kept (base weights included)
    assert 'visual.transformer.resblocks.0.attn.qkv.original_layer.weight' \
        in backbone.state_dict()
    backbone.train()
    out = backbone(torch.rand(2, 3, 128, 128) * 255, TEXTS[:2])
    loss = sum(out[k].sum() for k in ('img_feats', 'text_feats'))
    loss.backward()
    for n, p in backbone.named_parameters():
        assert (p.grad is not None) == ('lora_' in n), n


def test_lora_starts_as_identity(tiny_archive):
    path, _ = tiny_archive
    frozen = CLIPBackbone(
        arch=TINY_ARCH,
        checkpoint=path,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    lora = CLIPBackbone(
        arch=TINY_ARCH,
        checkpoint=path,
        image_tuning=lora_cfg(),
        text_tuning=lora_cfg()).eval()
    images = torch.rand(2, 3, 128, 128) * 255
    a, b = frozen(images, TEXTS[:2]), lora(images, TEXTS[:2])
    for k in ('img_global', 'img_feats', 'text_global', 'text_feats'):
        assert max_diff(a[k], b[k]) < 1e-6, k


def test_frozen_tower_keeps_no_graph():
    torch.manual_seed(0)
    backbone = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=lora_cfg())
    backbone.train()
    assert not backbone.visual.training and backbone.text.training
    out = backbone(torch.rand(1, 3, 128, 128) * 255, TEXTS[:1])
    assert not out['img_feats'].requires_grad
    assert out['img_feats'].grad_fn is None
    assert out['text_feats'].requires_grad
    both = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=FROZEN).train()
    out = both(torch.rand(1, 3, 128, 128) * 255, TEXTS[:1])
    assert all(not v.requires_grad for k, v in out.items()
               if k != 'logit_scale')
    assert not any(p.requires_grad for p in both.parameters())
    full = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=dict(mode='full'), text_tuning=FROZEN)
    assert all(p.requires_grad for p in full.visual.parameters())
    assert full(torch.rand(1, 3, 128, 128) * 255,
                TEXTS[:1])['img_global'].requires_grad


def test_image_size_interpolates_pos_embed():
    torch.manual_seed(0)
    native = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=FROZEN).eval()
    other = CLIPBackbone(
        arch=TINY_ARCH,
        image_size=(160, 96),
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    other.load_state_dict(native.state_dict())
    # inputs of any size are resized to image_size
    out = other(torch.rand(2, 3, 200, 300) * 255, TEXTS[:2])
    assert out['img_feats'].shape == (2, 64, 10, 6)
    assert out['img_global'].shape == (2, 64)
    assert torch.isfinite(out['img_feats']).all()
    # the stored parameter keeps the pretraining grid (files still load)
    assert other.visual.positional_embedding.shape == (65, 64)
    pos = native.visual.positional_embedding
    assert resize_pos_embed(pos, (8, 8), (8, 8)) is pos
    up = resize_pos_embed(pos, (8, 8), (16, 16))
    assert up.shape == (257, 64) and torch.equal(up[0], pos[0])
    # a constant grid stays constant under bicubic resizing
    const = torch.ones(65, 4)
    assert torch.allclose(
        resize_pos_embed(const, (8, 8), (5, 7)), torch.ones(36, 4))


def test_preprocess_resize_and_normalise():
    backbone = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=FROZEN)
    x = torch.full((1, 3, 256, 256), 128.)
    y = backbone.preprocess(x)
    assert y.shape == (1, 3, 128, 128)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    assert torch.allclose(y, (128 / 255 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match='B, 3, H, W'):
        backbone.preprocess(torch.zeros(1, 1, 128, 128))


def textured_image(size=1024, seed=0):
    """(size, size, 3) uint8 RGB with structure at every scale: gradients,
    sinusoids, a sharp-edged block and pixel noise (aliasing shows)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([
        128 + 100 * np.sin(2 * np.pi * (3 * xx + yy)), 255 * xx,
        128 + 90 * np.cos(14 * np.pi * yy) * np.sin(10 * np.pi * xx)
    ], -1)
    img += rng.normal(0, 25, img.shape)
    img[300:520, 600:700] = (250, 20, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    'antialias,max_tol,mean_tol',
    [
        (True, 1.0, 0.35),  # ours (the default)
        (False, None, None),  # plain bicubic: must be far off
    ])
def test_resize_matches_open_clip_preprocessing(antialias, max_tol, mean_tol):
    """1024 -> 224 on a non-constant image vs open_clip's eval transform of
    the same image as PIL (PIL bicubic, anti-aliased, then uint8). Compared
    in grey levels (0-255) after undoing the normalisation: PIL rounds to
    uint8 (<= 0.5) and uses fixed-point filter weights, so the bound is one
    grey level at any pixel and 0.35 on average (measured: 0.92 / 0.26)."""
    img = textured_image()
    ref = open_clip.image_transform(224, is_train=False)(Image.fromarray(img))
    arch = dict(TINY_ARCH, image_size=224)
    backbone = CLIPBackbone(
        arch=arch,
        image_tuning=FROZEN,
        text_tuning=FROZEN,
        resize_antialias=antialias)
    ours = backbone.preprocess(
        torch.from_numpy(img).permute(2, 0, 1)[None].float())[0]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1) * 255
    diff = ((ours - ref) * std).abs()
    if antialias:
        assert diff.max() <= max_tol and diff.mean() <= mean_tol, (diff.max(),
                                                                   diff.mean())
    else:
        assert diff.mean() > 5  # the test tells the two resizes apart


def test_fast_attn_matches_reference_path():
    torch.manual_seed(0)
    fast = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=FROZEN).eval()
    slow = CLIPBackbone(
        arch=TINY_ARCH,
        fast_attn=False,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    slow.load_state_dict(fast.state_dict())
    images = torch.rand(2, 3, 128, 128) * 255
    a, b = fast(images, TEXTS[:2]), slow(images, TEXTS[:2])
    for k in ('img_global', 'img_feats', 'text_global', 'text_feats'):
        assert_close_to_reference(a[k], b[k], what=k)


def test_text_outputs_and_errors():
    torch.manual_seed(0)
    backbone = CLIPBackbone(
        arch=TINY_ARCH, image_tuning=FROZEN, text_tuning=FROZEN).eval()
    images = torch.rand(2, 3, 128, 128) * 255
    out = backbone(images, ['the ship', TEXTS[-1]])
    mask = out['text_mask']
    assert mask.dtype == torch.bool and mask.shape == (2, 77)
    assert mask[0].sum() == 4  # SOT the ship EOT
    assert mask[1].all()  # truncated: EOT at position 76
    assert torch.equal(out['text_global'][0], out['text_feats'][0, 3])
    assert torch.equal(out['text_global'][1], out['text_feats'][1, 76])
    assert out['logit_scale'].dim() == 0
    assert torch.allclose(out['logit_scale'], torch.tensor(1 / 0.07))
    assert not backbone.logit_scale.requires_grad
    with pytest.raises(ValueError, match="expression 1 .*'   '"):
        backbone(images, ['ok', '   '])
    with pytest.raises(ValueError, match='expression 0'):
        backbone(images, ['', 'ok'])
    with pytest.raises(ValueError, match='2 images but 1'):
        backbone(images, ['ok'])


def test_build_from_registry():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    backbone = MODELS.build(
        dict(
            type='CLIPBackbone',
            arch=TINY_ARCH,
            image_tuning=dict(
                mode='lora',
                rank=2,
                alpha=2,
                drop_rate=0.,
                targets=['attn.qkv'])))
    assert isinstance(backbone, CLIPBackbone)
    n_lora = sum('lora_down' in n for n, _ in backbone.named_parameters())
    assert n_lora == 2 + 4  # image: qkv x2; text (default targets) x4
    backbone.init_weights()  # must not re-initialise / fail


def test_shared_knobs_and_checkpointed_blocks():
    """``logit_trainable`` and ``with_cp`` as on SigLIPBackbone; with_cp
    gives the same loss and gradients."""
    arch = dict(
        image_size=32,
        patch_size=16,
        embed_dims=32,
        num_layers=2,
        num_heads=2,
        output_dims=16,
        text_embed_dims=32,
        text_num_layers=2,
        text_num_heads=2,
        context_length=16,
        vocab_size=49408)
    full = dict(mode='full')
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        clip = CLIPBackbone(
            arch=arch,
            image_tuning=full,
            text_tuning=full,
            logit_trainable=True,
            with_cp=with_cp).train()
        assert clip.logit_scale.requires_grad
        assert clip.visual.transformer.with_cp == with_cp
        out = clip(torch.rand(2, 3, 32, 32) * 255, ['a red car', 'ship'])
        loss = out['img_feats'].square().mean() + out['text_feats'].mean()
        loss.backward()
        grads.append(
            [p.grad.clone() for p in clip.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_convolutional_stem_keeps_the_token_grid():
    """``stem_channels``: stride-2 convolutions (+ BatchNorm, ReLU) before
    a patch embedding of stride patch / 2**n give the same token grid;
    OpenAI's layout (no stem) keeps its parameters and is the default."""
    arch = dict(TINY_ARCH, stem_channels=(8, 8, 16))
    full = dict(mode='full')
    with_stem = CLIPBackbone(arch, image_tuning=full, text_tuning=full)
    plain = CLIPBackbone(TINY_ARCH, image_tuning=full, text_tuning=full)
    assert plain.visual.stem is None
    assert not any(k.startswith('visual.stem') for k in plain.state_dict())
    patch = TINY_ARCH['patch_size']
    assert with_stem.visual.conv1.in_channels == 16
    assert with_stem.visual.conv1.stride == (patch // 8, patch // 8)
    x = torch.rand(2, 3, TINY_ARCH['image_size'], TINY_ARCH['image_size'])
    (g1, f1), (g2, f2) = with_stem.encode_image(x * 255), \
        plain.encode_image(x * 255)
    assert f1.shape == f2.shape and g1.shape == g2.shape
    f1.sum().backward()
    assert with_stem.visual.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='divisible by 32'):
        CLIPBackbone(dict(TINY_ARCH, stem_channels=(8, ) * 5))
