# This model under mmengine's FlexibleRunner with FSDPStrategy (PyTorch
# FullyShardedDataParallel: parameters, gradients and optimizer state
# sharded across the GPUs, each block all-gathered when it runs), bf16
# autocast, AdamW over the trainable parameters. tools/train.py on CUDA
# GPUs:
#   bash tools/dist_train.sh CONFIG 8
_base_ = './rsrefseg2-l_siglip2-so400m-p16-512-sam2.1-hiera-l_8xb8-lora-300e_rrsisd-1024x1024.py'  # noqa: E501

runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    # mmengine's MMFullyShardedDataParallel that keeps the 0-d logit
    # scales / biases out of the shards (FSDP refuses scalar parameters;
    # rsrefseg_mm/engine/fsdp_wrapper.py); use_orig_params: LoRA and frozen
    # weights share wrapped modules; one FSDP unit per module of >= 10 M
    # parameters (towers' blocks are smaller: they shard in their parents)
    model_wrapper=dict(
        type='ScalarSafeFSDP',
        use_orig_params=True,
        auto_wrap_policy=dict(
            type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
            min_num_params=int(1e7))),
    # checkpoints hold the whole state dict (gathered on rank 0), loadable
    # by tools/test.py with the base config
    state_dict_cfg='full')
# bf16 autocast as the base (mmengine's AmpOptimWrapper, FSDP's sharded
# gradient scaler); mmengine clips each process's shard with
# torch.nn.utils.clip_grad_norm_, not the global norm, so there is no
# clipping under FSDP (the authors clip at 3.0 under DeepSpeed)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='bfloat16',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
