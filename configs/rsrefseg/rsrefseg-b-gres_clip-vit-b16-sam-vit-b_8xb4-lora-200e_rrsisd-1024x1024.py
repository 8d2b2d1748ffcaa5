# Generalized referring on RRSIS-D with the RSRefSeg-b CLIP variant: 20 % of
# the training samples are no-target pairs (an image with an expression of
# another image whose category is not on it; empty mask), drawn with a seed
# when the dataset is built. RRSIS-D's val / test hold none; score them as
# generalized referring (gIoU, N-acc, T-acc):
#   --cfg-options test_dataloader.dataset.no_target_ratio=0.2
_base_ = './rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'  # noqa: E501

train_dataloader = dict(dataset=dict(no_target_ratio=0.2, no_target_seed=0))
val_evaluator = dict(type='ReferringIoUMetric', generalized=True)
test_evaluator = val_evaluator
