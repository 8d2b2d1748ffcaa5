# Ablation of RSRefSeg-b: CLIP text tower frozen (no LoRA).
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(backbone=dict(text_tuning=dict(_delete_=True, mode='frozen')))
