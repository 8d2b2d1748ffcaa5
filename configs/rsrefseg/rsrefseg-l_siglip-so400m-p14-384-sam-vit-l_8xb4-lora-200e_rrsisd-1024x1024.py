# RSRefSeg-l, the paper's model: SigLIP so400m-patch14-384 + SAM ViT-L; the
# recipe of RSRefSeg-b (same LoRA targets, schedule and batch 32).
_base_ = [
    './rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501
]
sam_checkpoint = 'checkpoints/sam_vit_l_0b3195.pth'

model = dict(decode_head=dict(sam_arch='vit_l', checkpoint=sam_checkpoint))
