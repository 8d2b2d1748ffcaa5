# Ablation of RSRefSeg-b: one stride-2 down-sampling in the prompter (7x7=49
# sparse prompts).
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

model = dict(neck=dict(down_spatial_times=1))
