"""Full-size SAM ViT-B from a Hugging Face folder: a random transformers
``SamModel`` with ``facebook/sam-vit-base``'s configuration (transformers'
``SamConfig()`` defaults) saved with ``save_pretrained`` vs the same
weights through :class:`SAMPromptHead`, one 1024x1024 image, 49 sparse
prompts and a 256x256 dense prompt (the RSRefSeg-b shapes). Slow on CPU
(~1-2 min on 2 cores, ~2 GB): deselect with ``-k "not full_size"``."""
import pytest
import torch

from rsrefseg_mm.models.decode_heads import SAMPromptHead
from helpers import assert_close_to_reference

transformers = pytest.importorskip('transformers')
from hf_sam_helpers import hf_outputs, random_hf_sam  # noqa: E402


def test_full_size_vit_b_parity(tmp_path):
    config = transformers.SamConfig()
    assert config.vision_config.hidden_size == 768  # sam-vit-base
    model = random_hf_sam(config)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    head = SAMPromptHead(
        sam_arch='vit_b',
        checkpoint=str(tmp_path),
        encoder_tuning=dict(mode='frozen')).eval()
    assert head.decoder_norm_eps == 1e-6
    torch.manual_seed(5)
    images = torch.rand(1, 3, 1024, 1024) * 255
    sparse = torch.randn(1, 49, 256)
    dense_in = torch.randn(1, 1, 256, 256)
    emb, masks = hf_outputs(model, images, sparse, dense_in)
    del model
    inputs = dict(sparse_prompts=sparse, dense_prompts=dense_in)
    with torch.no_grad():
        ours_emb = head.encode_image(images)
        ours = head(dict(image_embeddings=ours_emb, **inputs))
        head.mask_decoder.set_transformer_norm_eps(1e-5)
        ours_eps5 = head(dict(image_embeddings=ours_emb, **inputs))
    emb_err = (ours_emb - emb).abs().max().item()
    mask_err = (ours - masks).abs().max().item()
    eps5_err = (ours_eps5 - masks).abs().max().item()
    print(f'\nSAM ViT-B full size, HF folder vs SAMPromptHead: embedding '
          f'max |diff| {emb_err:.2e} (max |emb| {emb.abs().max():.2f}); '
          f'mask logits max |diff| {mask_err:.2e} (max |logit| '
          f'{masks.abs().max():.2f}) with eps 1e-6, {eps5_err:.2e} with '
          f'segment-anything\'s 1e-5')
    assert_close_to_reference(ours_emb, emb, what='image embedding')
    assert_close_to_reference(ours, masks, what='mask logits')
