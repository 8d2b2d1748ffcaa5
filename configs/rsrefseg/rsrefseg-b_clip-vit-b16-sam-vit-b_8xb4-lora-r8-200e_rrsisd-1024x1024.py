# Ablation of RSRefSeg-b: LoRA rank 8 (alpha 8) on every tower.
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(
    backbone=dict(
        image_tuning=dict(rank=8, alpha=8), text_tuning=dict(rank=8, alpha=8)),
    decode_head=dict(encoder_tuning=dict(rank=8, alpha=8)))
