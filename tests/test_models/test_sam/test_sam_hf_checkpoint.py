"""SAM from Hugging Face folders (transformers ``SamModel`` layout):
key conversion for every arch, parity of a random tiny ``SamModel`` with
the same weights through :class:`SAMPromptHead`, the mask-decoder eps and
the errors (transformers is a test-only reference)."""
import json
import os
import os.path as osp

import pytest
import torch

from rsrefseg_mm.models.decode_heads import SAMPromptHead
from rsrefseg_mm.models.sam import (build_sam_modules,
                                    convert_hf_sam_state_dict,
                                    load_sam_checkpoint, read_sam_checkpoint)
from helpers import TINY_SAM, assert_close_to_reference

transformers = pytest.importorskip('transformers')
from hf_sam_helpers import hf_outputs, hf_sam_config, random_hf_sam  # noqa


@pytest.fixture(scope='module')
def tiny_hf_folder(tmp_path_factory):
    model = random_hf_sam(hf_sam_config(TINY_SAM))
    folder = str(tmp_path_factory.mktemp('sam-tiny-hf'))
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


@pytest.mark.parametrize('arch', ['vit_b', 'vit_l', 'vit_h'])
def test_keys_and_shapes_of_every_arch(arch):
    """Every ``SamModel`` tensor of the arch lands on a tensor of ours with
    the same shape, and every tensor of ours is covered (meta device)."""
    with torch.device('meta'):
        hf = transformers.SamModel(hf_sam_config(arch)).state_dict()
        ours = build_sam_modules(arch).state_dict()
    # SamModel registers the shared positional encoding twice (a safetensors
    # file keeps one; the equality of two copies is checked on real tensors)
    assert len(hf) == len(ours) + 1
    hf.pop('prompt_encoder.shared_embedding.positional_embedding')
    converted, unknown = convert_hf_sam_state_dict(hf)
    assert unknown == []
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_tiny_parity_with_transformers(tiny_hf_folder):
    folder, model = tiny_hf_folder
    head = SAMPromptHead(
        sam_arch=TINY_SAM,
        checkpoint=folder,
        encoder_tuning=dict(mode='frozen')).eval()
    assert head.decoder_norm_eps == 1e-6  # config.json of the folder
    assert head.mask_decoder.transformer_norm_eps == 1e-6
    torch.manual_seed(3)
    images = torch.rand(2, 3, 128, 128) * 255
    sparse = torch.randn(2, 5, 32)
    dense_in = torch.randn(2, 1, 32, 32)
    emb, masks = hf_outputs(model, images, sparse, dense_in)
    with torch.no_grad():
        ours_emb = head.encode_image(images)
        ours = head(
            dict(images=images, sparse_prompts=sparse, dense_prompts=dense_in))
    assert ours.shape == masks.shape == (2, 1, 32, 32)
    assert emb.abs().mean() > 0.1 and masks.abs().mean() > 0.1
    assert_close_to_reference(ours_emb, emb, what='image embedding')
    assert_close_to_reference(ours, masks, what='mask logits')


def test_tiny_point_prompts_match_transformers(tiny_hf_folder):
    """Point embeddings, not-a-point padding and the shared positional
    encoding are mapped: same sparse prompts for the same clicks."""
    folder, model = tiny_hf_folder
    head = SAMPromptHead(
        sam_arch=TINY_SAM,
        checkpoint=folder,
        encoder_tuning=dict(mode='frozen')).eval()
    coords = torch.tensor([[[10., 20.], [100., 64.], [3., 120.]]])
    labels = torch.tensor([[1, 0, 1]])
    with torch.no_grad():
        sparse, dense = head.prompt_encoder(
            points=(coords, labels), boxes=None, masks=None)
        hf_sparse, hf_dense = model.prompt_encoder(
            input_points=coords[:, None],
            input_labels=labels[:, None],
            input_boxes=None,
            input_masks=None)
    assert sparse.shape == (1, 4, 32)  # 3 clicks + the padding point
    assert (sparse - hf_sparse[:, 0]).abs().max() < 1e-5
    assert (dense - hf_dense).abs().max() < 1e-6


def test_decoder_norm_eps_from_config_json(tiny_hf_folder, tmp_path):
    folder, model = tiny_hf_folder
    copy = tmp_path / 'sam-hf'
    copy.mkdir()
    os.link(osp.join(folder, 'model.safetensors'), copy / 'model.safetensors')
    cfg = json.load(open(osp.join(folder, 'config.json')))
    cfg['mask_decoder_config']['layer_norm_eps'] = 3e-6
    (copy / 'config.json').write_text(json.dumps(cfg))
    build = dict(sam_arch=TINY_SAM, encoder_tuning=dict(mode='frozen'))
    assert SAMPromptHead(
        checkpoint=str(copy), **build).decoder_norm_eps == 3e-6
    # the .safetensors file: config.json beside it is read too
    assert SAMPromptHead(
        checkpoint=str(copy / 'model.safetensors'),
        **build).decoder_norm_eps == 3e-6
    # an explicit value wins
    head = SAMPromptHead(checkpoint=str(copy), decoder_norm_eps=1e-5, **build)
    assert head.mask_decoder.transformer_norm_eps == 1e-5
    # no config.json: transformers' default
    os.remove(copy / 'config.json')
    assert SAMPromptHead(
        checkpoint=str(copy), **build).decoder_norm_eps == 1e-6
    # segment-anything layout or random init: segment-anything's
    assert SAMPromptHead(**build).mask_decoder.transformer_norm_eps == 1e-5


def test_layout_detection_and_file_forms(tiny_hf_folder, tmp_path):
    folder, model = tiny_hf_folder
    state, info = read_sam_checkpoint(folder)
    assert info['layout'] == 'transformers' and info['unknown_keys'] == []
    assert info['file'] == osp.join(folder, 'model.safetensors')
    assert set(state) == set(build_sam_modules(TINY_SAM).state_dict())
    # both copies of the shared positional encoding (a SamModel state dict)
    sd = model.state_dict()
    converted, unknown = convert_hf_sam_state_dict(sd)
    assert unknown == [] and set(converted) == set(state)
    pe = 'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'
    assert torch.equal(converted[pe],
                       sd['shared_image_embedding.positional_embedding'])
    sd['prompt_encoder.shared_embedding.positional_embedding'] = torch.zeros(
        sd['shared_image_embedding.positional_embedding'].shape)
    with pytest.raises(ValueError, match='differ'):
        convert_hf_sam_state_dict(sd)
    # segment-anything keys in a .safetensors file are not converted
    from safetensors.torch import save_file
    sa = tmp_path / 'sam_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in state.items()}, str(sa))
    state2, info2 = read_sam_checkpoint(str(sa))
    assert info2['layout'] == 'segment-anything'
    assert all(torch.equal(state2[k], v) for k, v in state.items())


def test_incomplete_hf_folder_is_an_error(tiny_hf_folder, tmp_path):
    from safetensors.torch import save_file
    folder, model = tiny_hf_folder
    sd = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith('mask_decoder.iou_prediction_head.')
        and k != 'prompt_encoder.shared_embedding.positional_embedding'
    }
    path = tmp_path / 'model.safetensors'
    save_file(sd, str(path))
    with pytest.raises(ValueError) as err:
        load_sam_checkpoint(build_sam_modules(TINY_SAM), str(path))
    msg = str(err.value)
    assert str(path) in msg and 'transformers layout' in msg
    assert '6 missing tensors' in msg
    assert 'mask_decoder.iou_prediction_head.layers.0.weight' in msg
    # foreign tensors in a transformers file are unexpected, not dropped
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd.pop('prompt_encoder.shared_embedding.positional_embedding')
    sd['vision_encoder.extra.weight'] = torch.zeros(2)
    save_file(sd, str(path))
    with pytest.raises(
            ValueError, match=r'1 unexpected.*vision_encoder\.'
            r'extra\.weight'):
        load_sam_checkpoint(build_sam_modules(TINY_SAM), str(path))
    res = load_sam_checkpoint(
        build_sam_modules(TINY_SAM), str(path), strict=False)
    assert res['unexpected_keys'] == ['vision_encoder.extra.weight']


def test_wrong_arch_and_pickle_only_folder(tiny_hf_folder, tmp_path):
    folder, _ = tiny_hf_folder
    other = dict(TINY_SAM, encoder_global_attn_indexes=(0, ))
    with pytest.raises(ValueError, match='does not fit arch'):
        load_sam_checkpoint(build_sam_modules(other), folder)
    bin_only = tmp_path / 'sam-bin'
    bin_only.mkdir()
    torch.save({}, bin_only / 'pytorch_model.bin')
    with pytest.raises(
            FileNotFoundError, match='model.safetensors.*pytorch_model.bin'):
        load_sam_checkpoint(build_sam_modules(TINY_SAM), str(bin_only))
    with pytest.raises(FileNotFoundError, match='facebook/sam-vit-base'):
        load_sam_checkpoint(
            build_sam_modules(TINY_SAM), str(tmp_path / 'nope'), 'vit_b')
