# The `make demo` model for generalized referring: the tiny RSRefSeg, also
# trained on expressions that refer to nothing in the image ("the green
# triangle" where there is none: 20 % of the training pairs) and to several
# objects ("all the red objects": 10 %). SAM's IoU token predicts whether the
# referent is there (decode_head.presence_cfg); below 0.5 the mask is empty.
# Validation and test score gIoU, N-acc and T-acc besides oIoU / mIoU; the
# test split stays the single-target one of the base config, and
# `make demo` tests a generalized split with --cfg-options.
_base_ = './rsrefseg-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py'  # noqa: E501

model = dict(
    decode_head=dict(presence_cfg=dict(loss_weight=1.0, threshold=0.5)))
train_dataloader = dict(
    dataset=dict(no_target_ratio=0.2, multi_target_ratio=0.1))
val_evaluator = dict(type='ReferringIoUMetric', generalized=True)
test_evaluator = val_evaluator
