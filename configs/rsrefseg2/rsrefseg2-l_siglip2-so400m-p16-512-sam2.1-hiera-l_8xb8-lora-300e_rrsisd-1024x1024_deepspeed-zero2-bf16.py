# The authors' runner for this model: mmengine's FlexibleRunner with
# DeepSpeedStrategy, ZeRO stage 2 (optimizer state and gradients
# partitioned across the GPUs), bf16 (DeepSpeed casts the model and the
# images to bf16, fp32 master weights in the optimizer), gradient clipping
# 3.0, AdamW lr 1e-4 wd 0.05 over the trainable parameters. Needs
# `pip install -r requirements/deepspeed.txt` and CUDA GPUs:
#   bash tools/dist_train.sh CONFIG 8
_base_ = [
    './rsrefseg2-l_siglip2-so400m-p16-512-sam2.1-hiera-l_8xb8-lora-300e_rrsisd-1024x1024.py',  # noqa: E501
    '../_base_/strategies/deepspeed_zero2_bf16.py'
]

runner_type = 'FlexibleRunner'
optim_wrapper = dict(
    _delete_=True,
    type='DeepSpeedOptimWrapper',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
