"""The paper's RSRefSeg-b (SigLIP so400m-p14-384 + SAM ViT-B, LoRA) at full
size: one forward + backward on CPU from the primitive config, random
weights. SigLIP runs at its native 384 px (27x27 grid -> 49 sparse prompts);
SAM's encoder runs at 512 instead of 1024 (same parameters) to keep it to
seconds; both towers checkpoint their activations (``with_cp``) to keep the
peak memory down."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.sam import SAM_ARCHS
from rsrefseg_mm.utils import drop_pretrained_checkpoints

CONFIG = Path(__file__).resolve().parents[3] / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')


def test_paper_rsrefseg_b_forward_backward(siglip_spiece):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile(str(CONFIG))
    drop_pretrained_checkpoints(cfg.model)
    cfg.model.backbone.tokenizer = siglip_spiece
    # activation checkpointing keeps the step's peak memory for CI machines
    cfg.model.backbone.with_cp = True
    cfg.model.decode_head.with_cp = True
    cfg.model.decode_head.sam_arch = dict(SAM_ARCHS['vit_b'], image_size=512)
    cfg.model.neck.dense_prompt_size = (128, 128)
    cfg.model.neck.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.data_preprocessor.size = (512, 512)
    model = MODELS.build(cfg.model)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 960e6  # SigLIP so400m 878 M + SAM ViT-B 94 M
    pe_layer = model.decode_head.prompt_encoder.pe_layer
    assert model.neck._shared_pe[0] is pe_layer

    inputs = torch.randint(0, 256, (1, 3, 512, 512)).float()
    gt = torch.zeros(1, 512, 512, dtype=torch.long)
    gt[:, 100:300, 150:260] = 1
    sample = SegDataSample(
        metainfo=dict(
            text='the white storage tank left of the road',
            img_shape=(512, 512),
            ori_shape=(512, 512),
            pad_shape=(512, 512)))
    sample.gt_sem_seg = PixelData(data=gt)
    prompts = []  # the neck's outputs, seen in the one training forward
    model.neck.register_forward_hook(lambda m, i, out: prompts.append(out))
    losses = model.loss(inputs, [sample])
    assert len(prompts) == 1
    assert prompts[0]['sparse_prompts'].shape == (1, 49, 256)
    assert prompts[0]['dense_prompts'].shape == (1, 1, 128, 128)
    assert set(k for k in losses
               if k.startswith('decode.loss')) == {'decode.loss_ce'
                                                   }  # 5 x BCE, no Dice
    losses['decode.loss_ce'].backward()

    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    for prefix in ('backbone.vision_model', 'backbone.text_model',
                   'decode_head.image_encoder'):
        lora = [n for n in trainable if n.startswith(prefix)]
        assert lora and all('lora_' in n for n in lora), prefix
        assert any(named[n].grad is not None and named[n].grad.abs().sum() > 0
                   for n in lora), f'no gradient reached {prefix} LoRA'
    assert 'backbone.text_model.head.lora_down.weight' in trainable
    assert 'decode_head.image_encoder.neck.2.lora_up.weight' in trainable
    assert not named['backbone.logit_scale'].requires_grad
    assert not named['neck.logit_bias'].requires_grad
    for prefix in ('neck.fuse', 'neck.final_proj', 'decode_head.mask_decoder'):
        assert any(
            n.startswith(prefix) and named[n].grad is not None
            for n in trainable), prefix
