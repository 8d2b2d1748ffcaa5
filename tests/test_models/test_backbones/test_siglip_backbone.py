"""SigLIPBackbone: parity with transformers' SiglipModel (weights saved as a
Hugging Face folder), open_clip's layout, errors, tuning and checkpointing."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from safetensors.torch import save_file
from transformers import SiglipTokenizer as HFSiglipTokenizer

from rsrefseg_mm.models.backbones import SigLIPBackbone
from rsrefseg_mm.models.peft import LoRAConv2d  # noqa: F401
from helpers import assert_close_to_reference
from siglip_helpers import TINY_SIGLIP, hf_siglip_config

FROZEN = dict(mode='frozen')
TEXTS = [
    'the white storage tank left of the road', 'ship',
    'the second largest AIRPLANE, near the runway!'
]


def build(folder, **kwargs):
    cfg = dict(
        type='SigLIPBackbone',
        arch=dict(TINY_SIGLIP),
        checkpoint=folder,
        image_tuning=FROZEN,
        text_tuning=FROZEN)
    cfg.update(kwargs)
    init_default_scope('mmseg')
    return MODELS.build(cfg).eval()


def images(size=32, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float()


def hf_outputs(hf, folder, imgs, texts):
    tok = HFSiglipTokenizer(osp.join(folder, 'spiece.model'))
    ids = tok(
        texts,
        padding='max_length',
        max_length=64,
        truncation=True,
        return_tensors='pt')['input_ids']
    with torch.no_grad():
        vis = hf.vision_model(pixel_values=(imgs / 255 - 0.5) / 0.5)
        txt = hf.text_model(input_ids=ids)
    return vis, txt


def test_parity_with_transformers(tiny_siglip_folder):
    folder, hf = tiny_siglip_folder
    model = build(folder)
    imgs = images()
    with torch.no_grad():
        out = model(imgs, TEXTS)
    vis, txt = hf_outputs(hf, folder, imgs, TEXTS)
    B, h = 3, 32 // 8
    ref_patch = vis.last_hidden_state.transpose(1, 2).reshape(B, 32, h, h)
    assert out['img_feats'].shape == (B, 32, h, h)
    assert_close_to_reference(out['img_feats'], ref_patch)
    assert_close_to_reference(out['img_global'], vis.pooler_output)
    assert out['text_feats'].shape == (B, 64, 32)
    assert_close_to_reference(out['text_feats'], txt.last_hidden_state)
    assert_close_to_reference(out['text_global'], txt.pooler_output)
    torch.testing.assert_close(out['logit_scale'], hf.logit_scale.exp()[0])
    torch.testing.assert_close(out['logit_bias'], hf.logit_bias[0])
    assert out['text_mask'].dtype == torch.bool
    assert out['text_mask'][1].sum() == len(model.tokenizer.encode('ship'))


def test_resize_matches_authors_preprocessing(tiny_siglip_folder):
    """1024-style input -> bilinear, no antialias, after (x/255-0.5)/0.5."""
    folder, hf = tiny_siglip_folder
    model = build(folder)
    imgs = images(size=80)
    with torch.no_grad():
        out = model(imgs, TEXTS)
        x = F.interpolate(
            (imgs / 255 - 0.5) / 0.5,
            size=(32, 32),
            mode='bilinear',
            align_corners=False)
        ref = hf.vision_model(pixel_values=x).last_hidden_state
    assert_close_to_reference(out['img_feats'].flatten(2).transpose(1, 2), ref)


def test_sentence_feature_does_not_depend_on_batch(tiny_siglip_folder):
    model = build(tiny_siglip_folder[0])
    imgs = images(n=2)
    with torch.no_grad():
        alone = model(imgs[:1], ['ship'])['text_global']
        paired = model(imgs, ['ship', ' '.join(['storage tank'] * 20)])
    torch.testing.assert_close(alone[0], paired['text_global'][0])


def test_safetensors_file_and_open_clip_layout(tiny_siglip_folder, tmp_path):
    folder, hf = tiny_siglip_folder
    ref = build(folder)
    # the file alone (tokenizer given explicitly)
    direct = build(
        osp.join(folder, 'model.safetensors'),
        tokenizer=osp.join(folder, 'spiece.model'))
    for k, v in ref.state_dict().items():
        assert torch.equal(v, direct.state_dict()[k]), k
    # open_clip layout, written from the HF weights by an independent
    # inverse mapping, as a torch.save file (read with weights_only=True)
    oc = to_open_clip(hf.state_dict())
    path = tmp_path / 'open_clip_pytorch_model.bin'
    torch.save(oc, path)
    converted = build(str(path), tokenizer=osp.join(folder, 'spiece.model'))
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[k], v, msg=k)


def to_open_clip(sd):
    """transformers SigLIP keys -> open_clip (timm trunk + text) keys."""
    out = {}
    n_vis = 1 + max(
        int(k.split('.')[3])
        for k in sd if k.startswith('vision_model.encoder.layers.'))
    n_txt = 1 + max(
        int(k.split('.')[3])
        for k in sd if k.startswith('text_model.encoder.layers.'))
    v, t = 'vision_model', 'text_model'
    out['visual.trunk.patch_embed.proj.weight'] = sd[
        f'{v}.embeddings.patch_embedding.weight']
    out['visual.trunk.patch_embed.proj.bias'] = sd[
        f'{v}.embeddings.patch_embedding.bias']
    out['visual.trunk.pos_embed'] = sd[
        f'{v}.embeddings.position_embedding.weight'][None]
    for i in range(n_vis):
        p, q = f'{v}.encoder.layers.{i}', f'visual.trunk.blocks.{i}'
        for kind in ('weight', 'bias'):
            out[f'{q}.norm1.{kind}'] = sd[f'{p}.layer_norm1.{kind}']
            out[f'{q}.norm2.{kind}'] = sd[f'{p}.layer_norm2.{kind}']
            out[f'{q}.attn.qkv.{kind}'] = torch.cat(
                [sd[f'{p}.self_attn.{n}_proj.{kind}'] for n in 'qkv'])
            out[f'{q}.attn.proj.{kind}'] = sd[f'{p}.self_attn.out_proj.{kind}']
            out[f'{q}.mlp.fc1.{kind}'] = sd[f'{p}.mlp.fc1.{kind}']
            out[f'{q}.mlp.fc2.{kind}'] = sd[f'{p}.mlp.fc2.{kind}']
    h, a = f'{v}.head', 'visual.trunk.attn_pool'
    C = sd[f'{h}.probe'].shape[-1]
    for kind in ('weight', 'bias'):
        out[f'visual.trunk.norm.{kind}'] = sd[f'{v}.post_layernorm.{kind}']
        w = sd[f'{h}.attention.in_proj_{kind}']
        out[f'{a}.q.{kind}'], out[f'{a}.kv.{kind}'] = w[:C], w[C:]
        out[f'{a}.proj.{kind}'] = sd[f'{h}.attention.out_proj.{kind}']
        out[f'{a}.norm.{kind}'] = sd[f'{h}.layernorm.{kind}']
        out[f'{a}.mlp.fc1.{kind}'] = sd[f'{h}.mlp.fc1.{kind}']
        out[f'{a}.mlp.fc2.{kind}'] = sd[f'{h}.mlp.fc2.{kind}']
    out[f'{a}.latent'] = sd[f'{h}.probe']
    out['text.token_embedding.weight'] = sd[
        f'{t}.embeddings.token_embedding.weight']
    out['text.positional_embedding'] = sd[
        f'{t}.embeddings.position_embedding.weight']
    for i in range(n_txt):
        p, q = f'{t}.encoder.layers.{i}', f'text.transformer.resblocks.{i}'
        for kind in ('weight', 'bias'):
            out[f'{q}.ln_1.{kind}'] = sd[f'{p}.layer_norm1.{kind}']
            out[f'{q}.ln_2.{kind}'] = sd[f'{p}.layer_norm2.{kind}']
            out[f'{q}.attn.in_proj_{kind}'] = torch.cat(
                [sd[f'{p}.self_attn.{n}_proj.{kind}'] for n in 'qkv'])
            out[f'{q}.attn.out_proj.{kind}'] = sd[
                f'{p}.self_attn.out_proj.{kind}']
            out[f'{q}.mlp.c_fc.{kind}'] = sd[f'{p}.mlp.fc1.{kind}']
            out[f'{q}.mlp.c_proj.{kind}'] = sd[f'{p}.mlp.fc2.{kind}']
    for kind in ('weight', 'bias'):
        out[f'text.ln_final.{kind}'] = sd[f'{t}.final_layer_norm.{kind}']
        out[f'text.text_projection.{kind}'] = sd[f'{t}.head.{kind}']
    out['logit_scale'] = sd['logit_scale'].reshape(())
    out['logit_bias'] = sd['logit_bias'].reshape(())
    return out


def test_errors_name_file_arch_and_keys(tiny_siglip_folder, tmp_path):
    folder, hf = tiny_siglip_folder
    spiece = osp.join(folder, 'spiece.model')
    with pytest.raises(
            FileNotFoundError, match='google/siglip-so400m-patch14-384'):
        SigLIPBackbone(checkpoint=str(tmp_path / 'nothing'), tokenizer=spiece)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='model.safetensors'):
        SigLIPBackbone(
            arch=dict(TINY_SIGLIP), checkpoint=str(empty), tokenizer=spiece)
    other = dict(
        TINY_SIGLIP, embed_dims=48, text_embed_dims=48, output_dims=48)
    with pytest.raises(ValueError, match='does not match arch'):
        build(folder, arch=other)
    sd = {k: v for k, v in hf.state_dict().items() if 'layers.1.mlp' not in k}
    partial = tmp_path / 'partial.safetensors'
    save_file({k: v.contiguous() for k, v in sd.items()}, str(partial))
    with pytest.raises(ValueError, match=r'lacks 8 tensors.*layers\.1\.mlp'):
        build(str(partial), tokenizer=spiece)
    foreign = tmp_path / 'foreign.safetensors'
    save_file({'conv.weight': torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ValueError, match='holds no SigLIP weights'):
        build(str(foreign), tokenizer=spiece)
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'\x00' * 20)
    with pytest.raises(ValueError, match='corrupt.safetensors'):
        build(str(corrupt), tokenizer=spiece)
    with pytest.raises(ValueError, match='spiece.model'):
        SigLIPBackbone(arch=dict(TINY_SIGLIP), checkpoint=None)
    with pytest.raises(ValueError, match='empty'):
        build(folder)(images(n=1), [' ?! '])


def test_lora_targets_of_the_authors(tiny_siglip_folder):
    lora = dict(mode='lora', rank=4, alpha=4, drop_rate=0.1)
    model = build(
        tiny_siglip_folder[0],
        image_tuning=lora,
        text_tuning=dict(
            lora,
            targets=[
                'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
                'self_attn.out_proj', 'head'
            ]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all('lora_' in n for n in trainable)
    vis = {
        n.rsplit('.lora_', 1)[0]
        for n in trainable if n.startswith('vision_model')
    }
    txt = {
        n.rsplit('.lora_', 1)[0]
        for n in trainable if n.startswith('text_model')
    }
    assert len(vis) == 2 * 4  # q, k, v, out per layer; MAP head untouched
    assert len(txt) == 2 * 4 + 1 and 'text_model.head' in txt
    assert not model.logit_scale.requires_grad
    # LoRA starts as the identity: same outputs as the frozen model
    ref = build(tiny_siglip_folder[0])
    with torch.no_grad():
        a, b = model(images(), TEXTS), ref(images(), TEXTS)
    for k in ('img_feats', 'text_feats', 'text_global'):
        torch.testing.assert_close(a[k], b[k])


def test_with_cp_same_gradients(tiny_siglip_folder):
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = build(
            tiny_siglip_folder[0],
            image_tuning=dict(mode='full'),
            text_tuning=dict(mode='full'),
            with_cp=with_cp).train()
        out = model(images(), TEXTS)
        (out['img_feats'].square().mean() +
         out['text_global'].square().mean()).backward()
        grads.append(model.vision_model.encoder.layers[0].self_attn.q_proj.
                     weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('arch', [
    a for a, cfg in sorted(SigLIPBackbone.arch_zoo.items())
    if cfg['tokenizer_type'] == 'siglip'
])
def test_arch_zoo_shapes_equal_transformers(arch, siglip_spiece):
    """Every SigLIP arch builds the tensors transformers builds for its
    config (SigLIP 2's: test_siglip2_backbone.py)."""
    from transformers import SiglipModel

    cfg = SigLIPBackbone.arch_zoo[arch]
    with torch.device('meta'):
        ours = SigLIPBackbone(
            arch=arch,
            tokenizer=siglip_spiece,
            image_tuning=FROZEN,
            text_tuning=FROZEN)
        ref = SiglipModel(hf_siglip_config(cfg))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref_shapes['logit_scale'] = ref_shapes['logit_bias'] = (1, )
    assert shapes == ref_shapes


def test_full_size_so400m_parity(siglip_spiece):
    """The paper's arch once at full size (random weights, fp32, CPU)."""
    from transformers import SiglipModel
    arch = SigLIPBackbone.arch_zoo['so400m-patch14-384']
    torch.manual_seed(0)
    hf = SiglipModel(hf_siglip_config(arch)).eval()
    ours = SigLIPBackbone(
        arch='so400m-patch14-384',
        tokenizer=siglip_spiece,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=True)
    img = images(size=384, n=1)
    with torch.no_grad():
        out = ours(img, ['the white storage tank left of the road'])
        ids = ours.tokenizer(['the white storage tank left of the road'])[0]
        vis = hf.vision_model(pixel_values=(img / 255 - 0.5) / 0.5)
        txt = hf.text_model(input_ids=ids)
    assert out['img_feats'].shape == (1, 1152, 27, 27)
    assert_close_to_reference(out['img_feats'].flatten(2).transpose(1, 2),
                              vis.last_hidden_state)
    assert_close_to_reference(out['img_global'], vis.pooler_output)
    assert_close_to_reference(out['text_feats'], txt.last_hidden_state)
    assert_close_to_reference(out['text_global'], txt.pooler_output)


def test_open_clip_siglip_keys_cover_the_so400m_arch(siglip_spiece):
    """open_clip's ViT-SO400M-14-SigLIP-384 layout converts to exactly the
    tensors (names and shapes) of our so400m arch."""
    import open_clip

    from rsrefseg_mm.models.backbones import convert_open_clip_siglip
    oc = open_clip.create_model(
        'ViT-SO400M-14-SigLIP-384', pretrained=None, device='meta')
    converted = convert_open_clip_siglip(oc.state_dict())
    with torch.device('meta'):
        ours = SigLIPBackbone(
            arch='so400m-patch14-384',
            tokenizer=siglip_spiece,
            image_tuning=FROZEN,
            text_tuning=FROZEN)
    assert {k: tuple(v.shape)
            for k, v in converted.items()
            } == {k: tuple(v.shape)
                  for k, v in ours.state_dict().items()}


def test_parity_with_open_clip_model(siglip_spiece, tmp_path):
    """A real open_clip SigLIP (ViT-B-16-SigLIP, random weights) saved as
    open_clip saves it, loaded and run by SigLIPBackbone.

    open_clip builds SigLIP with exact (erf) GELUs, whereas big_vision (where
    SigLIP was trained) and transformers use the tanh approximation, as we
    do; the two differ by ~1e-3 on these features. The reference is switched
    to tanh so that the test checks the weight conversion at NETWORK_RTOL of
    the features' scale.
    """
    import open_clip
    torch.manual_seed(0)
    oc = open_clip.create_model('ViT-B-16-SigLIP', pretrained=None).eval()
    n_gelu = 0
    for m in oc.modules():
        if isinstance(m, torch.nn.GELU):
            m.approximate, n_gelu = 'tanh', n_gelu + 1
    assert n_gelu == 12 + 1 + 12  # vision blocks, MAP head, text blocks
    path = tmp_path / 'open_clip_model.safetensors'
    save_file({k: v.contiguous()
               for k, v in oc.state_dict().items()}, str(path))
    ours = SigLIPBackbone(
        arch='base-patch16-224',
        checkpoint=str(path),
        tokenizer=siglip_spiece,
        image_tuning=FROZEN,
        text_tuning=FROZEN).eval()
    img = images(size=224, n=1)
    text = ['the white storage tank left of the road']
    tokens = {}
    oc.text.ln_final.register_forward_hook(
        lambda m, i, o: tokens.setdefault('x', o))
    with torch.no_grad():
        out = ours(img, text)
        x = (img / 255 - 0.5) / 0.5
        ref_patch = oc.visual.trunk.forward_features(x)
        ref_img = oc.encode_image(x)
        ref_txt = oc.encode_text(ours.tokenizer(text)[0])
    assert_close_to_reference(out['img_feats'].flatten(2).transpose(1, 2),
                              ref_patch)
    assert_close_to_reference(out['img_global'], ref_img)
    assert_close_to_reference(out['text_global'], ref_txt)
    assert_close_to_reference(out['text_feats'], tokens['x'])
    torch.testing.assert_close(out['logit_bias'], oc.logit_bias.reshape(()))
