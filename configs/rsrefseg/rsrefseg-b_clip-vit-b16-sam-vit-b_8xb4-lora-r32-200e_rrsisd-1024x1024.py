# Ablation of RSRefSeg-b: LoRA rank 32 (alpha 32) on every tower.
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(
    backbone=dict(
        image_tuning=dict(rank=32, alpha=32),
        text_tuning=dict(rank=32, alpha=32)),
    decode_head=dict(encoder_tuning=dict(rank=32, alpha=32)))
