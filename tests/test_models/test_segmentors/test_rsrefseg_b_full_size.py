"""One full-size RSRefSeg-b (CLIP ViT-B/16 + SAM ViT-B, LoRA) forward and
backward on CPU, built from the primitive config with random weights.

The input is reduced: SAM's encoder runs at 512 instead of 1024 (same
architecture and parameters, a 32x32 instead of 64x64 position grid), so the
step takes seconds instead of minutes.
"""

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.sam import SAM_ARCHS
from rsrefseg_mm.utils import drop_pretrained_checkpoints
from helpers import REPO

CONFIG = REPO / 'configs' / 'rsrefseg' / \
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'


def test_rsrefseg_b_forward_backward_reduced_input():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile(str(CONFIG))
    drop_pretrained_checkpoints(cfg.model)
    cfg.model.decode_head.sam_arch = dict(SAM_ARCHS['vit_b'], image_size=512)
    cfg.model.neck.dense_prompt_size = (128, 128)
    cfg.model.neck.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.data_preprocessor.size = (256, 256)
    model = MODELS.build(cfg.model)
    model.train()
    assert sum(p.numel() for p in model.parameters()) > 240e6  # full size

    inputs = torch.randint(0, 256, (2, 3, 256, 256)).float()
    samples = []
    texts = ['the white storage tank left of the road', 'the small bridge']
    for i, text in enumerate(texts):
        gt = torch.zeros(1, 256, 256, dtype=torch.long)
        gt[:, 40 + 30 * i:120 + 30 * i, 60:160] = 1
        s = SegDataSample(
            metainfo=dict(
                text=text,
                img_shape=(256, 256),
                ori_shape=(256, 256),
                pad_shape=(256, 256)))
        s.gt_sem_seg = PixelData(data=gt)
        samples.append(s)
    losses = model.loss(inputs, samples)
    loss = sum(v for k, v in losses.items() if k.startswith('decode.loss'))
    assert torch.isfinite(loss)
    loss.backward()

    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    # LoRA in all three towers, full training of prompter and decoder
    for prefix in ('backbone.visual', 'backbone.text',
                   'decode_head.image_encoder'):
        lora = [n for n in trainable if n.startswith(prefix)]
        assert lora and all('lora_' in n for n in lora), prefix
        assert any(named[n].grad is not None and named[n].grad.abs().sum() > 0
                   for n in lora), f'no gradient reached {prefix} LoRA'
    for prefix in ('neck.', 'decode_head.mask_decoder'):
        assert any(
            n.startswith(prefix) and named[n].grad is not None
            for n in trainable), prefix
