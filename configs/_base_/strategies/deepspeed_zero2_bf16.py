# The RSRefSeg 2 authors' runner: mmengine's FlexibleRunner with
# DeepSpeedStrategy, ZeRO stage 2 (optimizer state and gradients partitioned
# across the GPUs), bf16 (DeepSpeed casts the model and the images to bf16,
# fp32 master weights in the optimizer), gradient clipping 3.0. A config
# inheriting it next to a model config sets
#   runner_type = 'FlexibleRunner'
#   optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper', ...)
# (DeepSpeed clips, casts and skips overflowing steps itself). Needs
# `pip install -r requirements/deepspeed.txt`.
strategy = dict(
    type='DeepSpeedStrategy',
    bf16=dict(enabled=True),
    gradient_clipping=3.0,
    inputs_to_half=['inputs'],
    zero_optimization=dict(
        stage=2,
        allgather_partitions=True,
        allgather_bucket_size=2e8,
        reduce_scatter=True,
        reduce_bucket_size='auto',
        overlap_comm=True,
        contiguous_gradients=True))
