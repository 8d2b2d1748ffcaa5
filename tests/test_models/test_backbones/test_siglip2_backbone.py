"""SigLIPBackbone with SigLIP 2 (fixed resolution): strict load of a
Hugging Face folder in SigLIP 2's layout, parity with transformers'
SiglipModel read from the same folder, refusals, batch independence and the
``siglip2-*`` presets."""
import os.path as osp

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from rsrefseg_mm.models.backbones import SigLIPBackbone
from rsrefseg_mm.models.backbones.siglip import (SigLIP2Tokenizer,
                                                 arch_tokenizer_type)
from rsrefseg_mm.utils.config import drop_pretrained_checkpoints
from helpers import assert_close_to_reference
from siglip_helpers import (TINY_SIGLIP, TINY_SIGLIP2, hf_siglip_config,
                            random_hf_siglip, save_hf_folder,
                            save_hf_siglip2_folder, train_gemma_spiece)

FROZEN = dict(mode='frozen')
TEXTS = [
    'the white storage tank left of the road', 'Ship',
    'the second largest AIRPLANE, near the runway!', '東京 tower 2026',
    ' '.join(['storage tank'] * 40)
]


@pytest.fixture(scope='module')
def gemma_model(tmp_path_factory) -> str:
    return train_gemma_spiece(str(tmp_path_factory.mktemp('gemma')))


@pytest.fixture(scope='module')
def siglip2_folder(tmp_path_factory, gemma_model):
    """A tiny SigLIP 2 folder (random SiglipModel, Gemma tokenizer)."""
    folder = str(tmp_path_factory.mktemp('siglip2-tiny'))
    return save_hf_siglip2_folder(folder, random_hf_siglip(TINY_SIGLIP2),
                                  gemma_model)


def build(checkpoint, **kwargs):
    cfg = dict(
        type='SigLIPBackbone',
        arch=dict(TINY_SIGLIP2),
        checkpoint=checkpoint,
        image_tuning=FROZEN,
        text_tuning=FROZEN)
    cfg.update(kwargs)
    init_default_scope('mmseg')
    return MODELS.build(cfg).eval()


def images(size=32, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float()


def test_strict_load_and_parity_with_transformers(siglip2_folder):
    """The folder as transformers reads it (AutoModel, AutoTokenizer): the
    same ids, patch features, pooled image, token features, pooled text."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    assert AutoConfig.from_pretrained(siglip2_folder).model_type == 'siglip'
    hf = AutoModel.from_pretrained(siglip2_folder).eval()
    assert type(hf).__name__ == 'SiglipModel'
    tok = AutoTokenizer.from_pretrained(siglip2_folder)
    assert type(tok).__name__ == 'GemmaTokenizerFast'

    model = build(siglip2_folder)  # strict_load=True
    assert model._missing_keys == [] and model._unexpected_keys == []
    assert isinstance(model.tokenizer, SigLIP2Tokenizer)
    assert model.tokenizer.model_file == osp.join(siglip2_folder,
                                                  'tokenizer.model')
    imgs = images()
    with torch.no_grad():
        out = model(imgs, TEXTS)
        ref_ids = tok([t.lower() for t in TEXTS],
                      padding='max_length',
                      max_length=64,
                      truncation=True,
                      return_tensors='pt')
        vis = hf.vision_model(pixel_values=(imgs / 255 - 0.5) / 0.5)
        # SigLIP 2's training setting: padded to 64, no attention mask
        txt = hf.text_model(input_ids=ref_ids['input_ids'])
    ids, mask = model.tokenize(TEXTS)
    assert torch.equal(ids, ref_ids['input_ids'])
    assert torch.equal(out['text_mask'], ref_ids['attention_mask'].bool())
    B, h = len(TEXTS), 32 // 8
    assert out['img_feats'].shape == (B, 32, h, h)
    assert_close_to_reference(
        out['img_feats'].flatten(2).transpose(1, 2),
        vis.last_hidden_state,
        what='patch features')
    assert_close_to_reference(
        out['img_global'], vis.pooler_output, what='pooled image')
    assert out['text_feats'].shape == (B, 64, 32)
    assert_close_to_reference(
        out['text_feats'], txt.last_hidden_state, what='token features')
    assert_close_to_reference(
        out['text_global'], txt.pooler_output, what='pooled text')
    torch.testing.assert_close(out['logit_scale'], hf.logit_scale.exp()[0])
    torch.testing.assert_close(out['logit_bias'], hf.logit_bias[0])


def test_text_features_do_not_depend_on_the_batch(siglip2_folder):
    model = build(siglip2_folder)
    with torch.no_grad():
        batch = model.encode_text(TEXTS)
        for i, text in enumerate(TEXTS):
            alone = model.encode_text([text])
            torch.testing.assert_close(alone[0][0], batch[0][i])
            torch.testing.assert_close(alone[1][0], batch[1][i])
            assert torch.equal(alone[2][0], batch[2][i])


def test_refuses_folders_that_do_not_fit(siglip2_folder, gemma_model,
                                         siglip_spiece, tmp_path):
    from transformers import Siglip2Config, Siglip2Model

    # SigLIP 2 weights with one text layer more: unexpected keys
    deeper = save_hf_siglip2_folder(
        str(tmp_path / 'deeper'),
        random_hf_siglip(dict(TINY_SIGLIP2, text_num_layers=3)),
        gemma_model,
        tokenizer_json=False)
    with pytest.raises(
            ValueError,
            match=f'{deeper} does not match arch.*'
            r'text_model\.encoder\.layers\.2'):
        build(deeper)
    # another vocabulary size: the shapes differ
    vocab = save_hf_siglip2_folder(
        str(tmp_path / 'vocab'),
        random_hf_siglip(dict(TINY_SIGLIP2, vocab_size=1024)),
        gemma_model,
        tokenizer_json=False)
    with pytest.raises(
            ValueError, match=f'{vocab} does not match arch.*'
            'token_embedding'):
        build(vocab)
    # SigLIP 2 NaFlex (transformers' Siglip2Model): linear patch embedding
    a = TINY_SIGLIP2
    naflex = Siglip2Model(
        Siglip2Config(
            text_config=dict(
                vocab_size=a['vocab_size'],
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                patch_size=8,
                num_patches=16)))
    folder = save_hf_siglip2_folder(
        str(tmp_path / 'naflex'), naflex, gemma_model, tokenizer_json=False)
    with pytest.raises(
            ValueError, match=f'{folder} does not match arch.*'
            'patch_embedding'):
        build(folder)
    # a SigLIP 2 arch on a SigLIP folder: spiece.model, no tokenizer.model
    siglip = tmp_path / 'siglip'
    siglip.mkdir()
    save_hf_folder(str(siglip), random_hf_siglip(TINY_SIGLIP), siglip_spiece)
    with pytest.raises(FileNotFoundError, match='tokenizer.model'):
        build(str(siglip))
    with pytest.raises(ValueError, match='tokenizer.model'):
        build(None)
    with pytest.raises(
            FileNotFoundError,
            match='google/siglip2-so400m-patch16-512.*'
            'tokenizer.model'):
        SigLIPBackbone(
            arch='siglip2-so400m-patch16-512',
            checkpoint=str(tmp_path / 'nothing'),
            tokenizer=gemma_model)
    with pytest.raises(ValueError, match='empty'):
        build(siglip2_folder).encode_text([' \t'])


def test_tokenizer_cfg_and_config_tokenizer_path(siglip2_folder):
    model = build(siglip2_folder, tokenizer_cfg=dict(lowercase=False))
    assert not model.tokenizer.lowercase
    cased = model.tokenize(['Ship'])[0]
    assert not torch.equal(cased, build(siglip2_folder).tokenize(['Ship'])[0])
    cfg = dict(
        backbone=dict(
            type='SigLIPBackbone',
            arch='siglip2-so400m-patch16-512',
            checkpoint='checkpoints/siglip2-so400m-patch16-512'))
    assert drop_pretrained_checkpoints(cfg) == 1
    assert cfg['backbone']['tokenizer'] == \
        'checkpoints/siglip2-so400m-patch16-512/tokenizer.model'


def test_so400m_patch16_512_preset():
    """RSRefSeg 2's SigLIP 2: 32x32 grid, Gemma's vocabulary, 64 tokens."""
    cfg = SigLIPBackbone.arch_zoo['siglip2-so400m-patch16-512']
    assert cfg == dict(
        image_size=512,
        patch_size=16,
        embed_dims=1152,
        num_layers=27,
        num_heads=16,
        hidden_dims=4304,
        text_embed_dims=1152,
        text_num_layers=27,
        text_num_heads=16,
        text_hidden_dims=4304,
        output_dims=1152,
        context_length=64,
        vocab_size=256000,
        tokenizer_type='gemma')
    for name, arch in SigLIPBackbone.arch_zoo.items():
        assert arch_tokenizer_type(name) == arch['tokenizer_type'], name


@pytest.mark.parametrize(
    'arch',
    [a for a in sorted(SigLIPBackbone.arch_zoo) if a.startswith('siglip2')])
def test_siglip2_presets_equal_transformers_shapes(arch, gemma_model):
    """Every SigLIP 2 preset builds the tensors transformers' SiglipModel
    builds for its config (meta device: no memory)."""
    from transformers import SiglipModel
    from transformers.modeling_utils import no_init_weights
    cfg = SigLIPBackbone.arch_zoo[arch]
    with torch.device('meta'):
        ours = SigLIPBackbone(
            arch=arch,
            tokenizer=gemma_model,
            image_tuning=FROZEN,
            text_tuning=FROZEN)
        with no_init_weights():  # transformers' init costs seconds
            ref = SiglipModel(hf_siglip_config(cfg))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref_shapes['logit_scale'] = ref_shapes['logit_bias'] = (1, )
    assert shapes == ref_shapes
    assert isinstance(ours.tokenizer, SigLIP2Tokenizer)
