# The paper's recipe (RSRefSeg released configs): AdamW lr 1e-4, weight decay
# 0.05, linear warm-up from 0.01x over 5 epochs, then cosine to 0.001x at
# epoch 200, bf16 mixed precision; the best checkpoint is chosen on val mIoU.
max_epochs = 200
warmup_epochs = 5
val_interval = 5

# mmengine's AmpOptimWrapper (bf16 autocast; needs a GPU) in which a step
# with a NaN/inf loss or gradient is skipped (skipped_steps in the log); 20
# in a row stop training (rsrefseg_mm/engine/optimizers). Without a GPU,
# train in fp32: optim_wrapper = dict(type='SkipNonFiniteOptimWrapper',
# _delete_=True, ...). The constructor gives AdamW the trainable (LoRA,
# prompter, decoder) parameters only and uses PyTorch's fused AdamW kernel
# on CUDA.
optim_wrapper = dict(
    type='SkipNonFiniteAmpOptimWrapper',
    dtype='bfloat16',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    max_consecutive_skips=20,
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.001,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        T_max=max_epochs - warmup_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=True,
        interval=val_interval,
        max_keep_ckpts=2,
        save_best='refer/mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='ReferringVisualizationHook'),
)
log_processor = dict(by_epoch=True)
