# The tiny RSRefSeg 2 under the authors' runner: mmengine's FlexibleRunner
# with DeepSpeedStrategy, ZeRO stage 2, bf16, gradient clipping 3.0, as the
# full-size `*_deepspeed-zero2-bf16.py` configs. Needs
# `pip install -r requirements/deepspeed.txt`; on CUDA GPUs:
#   bash tools/dist_train.sh CONFIG 2
# DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu) does not get this far with
# mmengine 0.10.7: docs/rsrefseg2.md says where it stops.
_base_ = [
    './rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py',  # noqa: E501
    '../_base_/strategies/deepspeed_zero2_bf16.py'
]

runner_type = 'FlexibleRunner'
optim_wrapper = dict(
    _delete_=True,
    type='DeepSpeedOptimWrapper',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
