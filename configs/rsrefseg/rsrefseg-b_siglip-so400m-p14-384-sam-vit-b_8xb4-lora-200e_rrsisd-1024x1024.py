# RSRefSeg-b, the paper's model: SigLIP so400m-patch14-384 + SAM ViT-B, LoRA
# (r16, a16, p0.1) on SigLIP's q/k/v/out projections (+ the text head) and on
# SAM's qkv/proj/lin1/lin2 and neck convs; prompter, prompt encoder and mask
# decoder fully trained. 8 GPUs x 4 images (batch 32), AdamW 1e-4 wd 0.05,
# 5-epoch linear warm-up, cosine to 0.001x at 200 epochs, bf16, RRSIS-D.
_base_ = [
    '../_base_/models/rsrefseg_siglip.py', '../_base_/datasets/rrsisd.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_200e_adamw.py'
]
crop_size = (1024, 1024)
siglip_checkpoint = 'checkpoints/siglip-so400m-patch14-384'
sam_checkpoint = 'checkpoints/sam_vit_b_01ec64.pth'
norm_cfg = dict(type='SyncBN', requires_grad=True)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(checkpoint=siglip_checkpoint),
    neck=dict(norm_cfg=norm_cfg),
    decode_head=dict(checkpoint=sam_checkpoint))
train_dataloader = dict(batch_size=4, num_workers=4)
# lr 1e-4 is for a total batch of 32
auto_scale_lr = dict(enable=False, base_batch_size=32)
