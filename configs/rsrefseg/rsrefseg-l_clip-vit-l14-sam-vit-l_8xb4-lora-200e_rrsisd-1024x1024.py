# RSRefSeg-l: CLIP ViT-L/14 + SAM ViT-L, LoRA (r16, a16, p0.1) on all towers,
# 8 GPUs x 4 images (batch 32), AdamW 1e-4, 200 epochs, bf16 AMP, RRSIS-D.
_base_ = [
    '../_base_/models/rsrefseg.py', '../_base_/datasets/rrsisd.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_200e_adamw.py'
]
crop_size = (1024, 1024)
clip_checkpoint = 'checkpoints/ViT-L-14.pt'
sam_checkpoint = 'checkpoints/sam_vit_l_0b3195.pth'
norm_cfg = dict(type='SyncBN', requires_grad=True)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='ViT-L/14', checkpoint=clip_checkpoint),
    neck=dict(in_channels=768, norm_cfg=norm_cfg),  # CLIP ViT-L/14 embed
    decode_head=dict(sam_arch='vit_l', checkpoint=sam_checkpoint))
train_dataloader = dict(batch_size=4, num_workers=4)
auto_scale_lr = dict(enable=False, base_batch_size=32)
