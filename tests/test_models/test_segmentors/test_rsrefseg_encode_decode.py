"""Encode an image once, decode many expressions: ``RSRefSeg.encode_image``
+ ``RSRefSeg.decode`` give the numbers of the one-pass paths, for the tiny
CLIP config and a tiny-size paper (SigLIP) config with random weights."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from helpers import REPO, TINY_CONFIG, TINY_SAM, assert_close_to_reference
from siglip_helpers import TINY_SIGLIP

PAPER_B = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')
TEXTS = [
    'the red square on the left', 'a small blue circle',
    'the largest green triangle'
]


def _build(cfg: Config):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    # random LayerNorm / BN statistics would hide swapped paths
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@pytest.fixture(scope='module', params=['clip-tiny', 'siglip-paper-tiny'])
def model(request, siglip_spiece):
    if request.param == 'clip-tiny':
        return _build(Config.fromfile(TINY_CONFIG)), 128
    cfg = Config.fromfile(str(PAPER_B))
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(
                    arch=dict(_delete_=True, **TINY_SIGLIP),
                    checkpoint=None,
                    tokenizer=siglip_spiece),
                neck=dict(
                    in_channels=32, prompt_dims=32, dense_prompt_size=(32,
                                                                       32)),
                decode_head=dict(
                    sam_arch=dict(_delete_=True, **TINY_SAM),
                    checkpoint=None))))
    return _build(cfg), 128


def _one_pass(model, inputs, texts):
    """The segmentor before the split: backbone(images, texts) -> neck ->
    head(images, prompts)."""
    feats = model.backbone(inputs, texts)
    prompts = model.neck(feats)
    return model.decode_head.forward(dict(images=inputs, **prompts))


@torch.no_grad()
def test_encode_decode_equals_one_pass(model):
    model, size = model
    torch.manual_seed(1)
    inputs = torch.rand(3, 3, size, size) * 255
    want = _one_pass(model, inputs, TEXTS)
    got, prompts = model.decode(model.encode_image(inputs), TEXTS)
    assert got.shape == want.shape == (3, 1) + got.shape[2:]
    assert_close_to_reference(got, want)
    # the training / test path (extract_feat: SAM encodes inside the head)
    x = model.extract_feat(inputs, [dict(text=t) for t in TEXTS])
    assert_close_to_reference(model.decode_head.forward(x), want)
    assert prompts['global_map'].shape[0] == 3


@torch.no_grad()
def test_one_image_many_expressions(model):
    model, size = model
    torch.manual_seed(2)
    image = torch.rand(1, 3, size, size) * 255
    embeddings = model.encode_image(image)
    got, _ = model.decode(embeddings, TEXTS)
    assert got.shape[0] == len(TEXTS)
    for i, text in enumerate(TEXTS):
        want = _one_pass(model, image, [text])
        assert_close_to_reference(got[i:i + 1], want, what=text)
    # the image features are shared views, not per-expression copies
    selected = model._select_images(embeddings, len(TEXTS), None)
    for key, value in selected.items():
        assert value.data_ptr() == embeddings[key].data_ptr(), key
        assert value.stride(0) == 0, key


@torch.no_grad()
def test_image_index_pairs_expressions_with_images(model):
    model, size = model
    torch.manual_seed(3)
    images = torch.rand(2, 3, size, size) * 255
    embeddings = model.encode_image(images)
    index = torch.tensor([1, 0, 1])
    got, _ = model.decode(embeddings, TEXTS, image_index=index)
    for i, text in enumerate(TEXTS):
        want = _one_pass(model, images[index[i]][None], [text])
        assert_close_to_reference(got[i:i + 1], want, what=text)
    with pytest.raises(ValueError, match='image_index'):
        model.decode(embeddings, TEXTS)
