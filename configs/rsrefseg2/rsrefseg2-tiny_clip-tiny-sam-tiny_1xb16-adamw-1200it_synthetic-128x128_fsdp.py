# The tiny RSRefSeg 2 under mmengine's FlexibleRunner with FSDPStrategy
# (PyTorch FullyShardedDataParallel: parameters, gradients and optimizer
# state sharded across the processes). It runs on the CPU with gloo:
#   bash tools/dist_train.sh CONFIG 2
# (tools/train.py sets model_wrapper.device_id='cpu' without CUDA).
_base_ = './rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py'  # noqa: E501

runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    # mmengine's MMFullyShardedDataParallel that keeps the 0-d logit
    # scales / biases out of the shards (FSDP refuses scalar parameters;
    # rsrefseg_mm/engine/fsdp_wrapper.py); use_orig_params: the optimizer
    # sees the model's own parameters (LoRA and frozen weights may share a
    # wrapped module); one FSDP unit at this size (no auto_wrap_policy)
    model_wrapper=dict(type='ScalarSafeFSDP', use_orig_params=True),
    # checkpoints hold the whole state dict (gathered on rank 0), loadable
    # by tools/test.py with the base config
    state_dict_cfg='full')
# fp32, as the base, through mmengine's OptimWrapper: its gradient clipping
# and the non-finite step guard would see each process's shard only, so
# neither is used under FSDP
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
