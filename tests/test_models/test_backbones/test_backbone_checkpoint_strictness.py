"""CLIP and SigLIP weight files must hold exactly the arch's tensors: a
missing or unexpected tensor is an error naming the file, the arch and the
keys, unless ``strict_load=False`` asks for a partial load."""
import os.path as osp

import pytest
import torch
from safetensors.torch import save_file

from rsrefseg_mm.models.backbones import CLIPBackbone, SigLIPBackbone
from siglip_helpers import TINY_SIGLIP

FROZEN = dict(mode='frozen')
TINY_CLIP = dict(
    image_size=32,
    patch_size=16,
    embed_dims=32,
    num_layers=1,
    num_heads=2,
    output_dims=32,
    text_embed_dims=32,
    text_num_layers=1,
    text_num_heads=2,
    context_length=77,
    vocab_size=49408)


def clip(checkpoint=None, **kwargs):
    torch.manual_seed(0)
    return CLIPBackbone(
        arch=TINY_CLIP,
        checkpoint=checkpoint,
        image_tuning=FROZEN,
        text_tuning=FROZEN,
        **kwargs)


def siglip(checkpoint, spiece, **kwargs):
    torch.manual_seed(0)
    return SigLIPBackbone(
        arch=dict(TINY_SIGLIP),
        checkpoint=checkpoint,
        tokenizer=spiece,
        image_tuning=FROZEN,
        text_tuning=FROZEN,
        **kwargs)


def perturbed(state):
    torch.manual_seed(1)
    return {k: v + torch.randn_like(v) for k, v in state.items()}


def test_clip_missing_and_unexpected_tensors(tmp_path):
    state = perturbed(clip().state_dict())
    lacks = 'visual.ln_post.weight'
    path = str(tmp_path / 'clip_partial.pth')
    torch.save({k: v for k, v in state.items() if k != lacks}, path)
    with pytest.raises(ValueError) as err:
        clip(path)
    msg = str(err.value)
    assert path in msg and "arch 'custom'" in msg
    assert '1 missing tensors' in msg and lacks in msg
    assert 'strict_load=False' in msg
    torch.save(dict(state, **{'visual.extra': torch.zeros(1)}), path)
    with pytest.raises(ValueError, match=r"1 unexpected.*'visual\.extra'"):
        clip(path)
    # asked for: loads what fits, the rest keeps its initial value
    torch.save({k: v for k, v in state.items() if k != lacks}, path)
    partial = clip(path, strict_load=False).state_dict()
    fresh = clip().state_dict()
    assert torch.equal(partial[lacks], fresh[lacks])
    assert all(
        torch.equal(partial[k], v) for k, v in state.items() if k != lacks)
    # the complete file loads strictly
    torch.save(state, path)
    assert all(
        torch.equal(clip(path).state_dict()[k], v) for k, v in state.items())


def test_siglip_missing_and_unexpected_tensors(tiny_siglip_folder, tmp_path):
    folder, hf = tiny_siglip_folder
    spiece = osp.join(folder, 'spiece.model')
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    path = str(tmp_path / 'model.safetensors')
    # outside the towers: the filter bias
    save_file({k: v for k, v in state.items() if k != 'logit_bias'}, path)
    with pytest.raises(ValueError) as err:
        siglip(path, spiece)
    msg = str(err.value)
    assert path in msg and "arch 'custom'" in msg
    assert "1 missing tensors" in msg and "'logit_bias'" in msg
    save_file(dict(state, extra=torch.zeros(1)), path)
    with pytest.raises(ValueError, match=r"1 unexpected.*'extra'"):
        siglip(path, spiece)
    # asked for: a partial load, also of tower tensors
    tower = 'text_model.final_layer_norm.weight'
    save_file({k: v for k, v in state.items() if k != tower}, path)
    with pytest.raises(ValueError, match=r'lacks 1 tensors'):
        siglip(path, spiece)
    partial = siglip(path, spiece, strict_load=False).state_dict()
    assert torch.equal(partial['logit_bias'], state['logit_bias'])
    assert not torch.equal(partial[tower], state[tower])
    # the Hugging Face folder itself is complete
    siglip(folder, spiece)
