"""PairedMaskDecoder pairs image i with prompt set i."""
import pytest
import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from rsrefseg_mm.models.sam.sam_mask_decoder import PairedMaskDecoder


def decoders(dim=32):
    torch.manual_seed(0)
    kw = dict(
        transformer_dim=dim, num_multimask_outputs=3, iou_head_hidden_dim=32)
    stock = MaskDecoder(
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=dim, mlp_dim=64, num_heads=4),
        **kw)
    paired = PairedMaskDecoder(
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=dim, mlp_dim=64, num_heads=4),
        **kw)
    paired.load_state_dict(stock.state_dict())
    return stock.eval(), paired.eval()


@pytest.mark.parametrize('multimask', [False, True])
def test_paired_equals_per_image_stock(multimask):
    stock, paired = decoders()
    B, C, h, w = 3, 32, 8, 8
    img = torch.randn(B, C, h, w)
    pe = torch.randn(1, C, h, w)
    sparse = torch.randn(B, 5, C)
    dense = torch.randn(B, C, h, w)
    with torch.no_grad():
        masks, iou = paired(img, pe, sparse, dense, multimask)
        assert masks.shape == (B, 3 if multimask else 1, 4 * h, 4 * w)
        for i in range(B):
            m_i, iou_i = stock(img[i:i + 1], pe, sparse[i:i + 1],
                               dense[i:i + 1], multimask)
            assert torch.allclose(masks[i:i + 1], m_i, atol=1e-5)
            assert torch.allclose(iou[i:i + 1], iou_i, atol=1e-5)
        # a shuffled prompt order gives other masks: pairing is by index
        masks_perm, _ = paired(img, pe, sparse.flip(0), dense, multimask)
        assert not torch.allclose(masks_perm[0], masks[0], atol=1e-3)


def test_stock_decoder_cannot_pair():
    """Documents why the subclass exists: the stock call gives B*B masks or
    a shape error for B images with one prompt set each."""
    stock, _ = decoders()
    B, C = 2, 32
    with pytest.raises(RuntimeError):
        stock(
            torch.randn(B, C, 8, 8), torch.randn(1, C, 8, 8),
            torch.randn(B, 5, C), torch.randn(B, C, 8, 8), False)


def test_batch_mismatch_raises():
    _, paired = decoders()
    with pytest.raises(ValueError, match='pairs image i'):
        paired(
            torch.randn(2, 32, 8, 8), torch.randn(1, 32, 8, 8),
            torch.randn(3, 5, 32), torch.randn(2, 32, 8, 8), False)


def test_transformer_norm_eps():
    """The eps reaches every LayerNorm of the two-way transformer and
    nothing else; it is what the forward uses."""
    import torch.nn as nn
    _, paired = decoders()
    norms = [
        m for m in paired.transformer.modules() if isinstance(m, nn.LayerNorm)
    ]
    assert len(norms) == 9  # 4 per layer + norm_final_attn
    assert paired.transformer_norm_eps == 1e-5  # segment-anything's
    paired.set_transformer_norm_eps(1e-6)
    assert paired.transformer_norm_eps == 1e-6
    assert all(m.eps == 1e-6 for m in norms)
    assert paired.output_upscaling[1].eps == 1e-6  # LayerNorm2d, unchanged
    # a constant-ish token: its normalisation depends on the eps
    x = torch.full((1, 2, 32), 0.5) + 1e-3 * torch.randn(1, 2, 32)
    ref = torch.nn.functional.layer_norm(x, (32, ), norms[0].weight,
                                         norms[0].bias, 1e-6)
    assert torch.allclose(norms[0](x), ref)
    assert not torch.allclose(
        norms[0](x),
        torch.nn.functional.layer_norm(x, (32, ), norms[0].weight,
                                       norms[0].bias, 1e-5),
        atol=1e-3)
    with pytest.raises(ValueError, match='> 0'):
        paired.set_transformer_norm_eps(0)
