# Ablation of RSRefSeg-b: without the global (sentence) filter.
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(neck=dict(use_global_filter=False))
