# RSRefSeg 2's recipe (KyanChen/RSRefSeg2, configs_RSRefSeg2/
# rrsisd_training.py and risbench_training.py): AdamW lr 1e-4, weight decay
# 0.05, gradient norm clipped at 3.0, bf16; linear warm-up from 0.01x over 5
# epochs, the base lr until epoch 30 (0.1 x max_epochs), then a cosine of
# period T_max = 1.3 x max_epochs (390) stepped per epoch from epoch 30,
# floor 0.01x, stopped at max_epochs: the lr ends at 0.22x, not at the
# floor. Validation every 10 epochs, the best checkpoint on val gIoU.
# RefSegRS changes the numbers (600 epochs, lr 2e-4, T_max 1.8 x).
max_epochs = 300
warmup_epochs = 5
cosine_begin = int(0.1 * max_epochs)
cosine_t_max = int(1.3 * max_epochs)
val_interval = 10
base_lr = 1e-4

# The authors train with DeepSpeed ZeRO-2 in bf16 with gradient clipping 3.0
# (the *_deepspeed-zero2-bf16.py variants); here the same numerics through
# mmengine's Runner: bf16 autocast (AmpOptimWrapper; needs a GPU) in which a
# step with a NaN/inf loss or gradient is skipped (20 in a row stop
# training), the gradient norm clipped at 3.0, AdamW over the trainable
# parameters (LoRA, prompter, SAM 2's prompt encoder and mask decoder).
optim_wrapper = dict(
    type='SkipNonFiniteAmpOptimWrapper',
    dtype='bfloat16',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
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
        T_max=cosine_t_max,
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=cosine_begin,
        end=max_epochs),
]
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # gIoU needs ReferringIoUMetric(generalized=True) (the RSRefSeg 2
    # configs set it); on expressions that all have a target it equals mIoU
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=True,
        interval=val_interval,
        max_keep_ckpts=5,
        save_last=True,
        save_best='refer/gIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='ReferringVisualizationHook'),
)
log_processor = dict(by_epoch=True)
