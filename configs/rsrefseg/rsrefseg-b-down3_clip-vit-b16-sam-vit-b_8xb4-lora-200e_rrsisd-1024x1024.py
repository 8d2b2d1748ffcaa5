# Ablation of RSRefSeg-b: three stride-2 down-samplings in the prompter
# (2x2=4 sparse prompts).
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(neck=dict(down_spatial_times=3))
