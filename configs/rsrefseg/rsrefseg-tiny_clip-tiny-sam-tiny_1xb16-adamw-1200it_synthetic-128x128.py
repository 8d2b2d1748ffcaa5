# Tiny RSRefSeg for the CPU demo (`make demo`): CLIP-like towers of width 64
# and a 2-layer SAM, random-initialised (no weight files), trained from
# scratch on synthetic referring scenes. It shows the whole pipeline - text
# filters, SAM prompts, training, evaluation - in minutes on 2 CPU cores; the
# numbers say nothing about RRSIS-D.
_base_ = [
    '../_base_/models/rsrefseg.py',
    '../_base_/datasets/synthetic_referring.py',
    '../_base_/default_runtime.py',
]
crop_size = (128, 128)
max_iters = 1200
val_interval = 600
# Warm-up, then a cosine decay that ends with the run: with the filter
# grounding loss (below) the words drive the mask after a few hundred
# iterations, and the decay settles the rest.
cosine_iters = max_iters
full = dict(mode='full')

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # From-scratch towers only learn to align patches with words through SAM
    # otherwise, and often do not within the budget: the model sits on a
    # text-agnostic plateau (~30 mIoU) or the image tower collapses (all
    # patch features alike). A BCE of the global filter logits against the
    # target mask (pooled onto the 8x8 filter grid) aligns them from the
    # first iterations (not in the paper; pretrained towers need no help).
    filter_loss_weight=1.0,
    backbone=dict(
        arch=dict(
            _delete_=True,
            image_size=128,
            patch_size=16,
            embed_dims=64,
            num_layers=2,
            num_heads=2,
            output_dims=64,
            text_embed_dims=64,
            text_num_layers=2,
            text_num_heads=2,
            context_length=24,
            vocab_size=49408),
        checkpoint=None,
        image_tuning=full,
        text_tuning=full),
    neck=dict(
        in_channels=64,
        prompt_dims=64,
        dense_prompt_size=(64, 64),  # 4x SAM's 16x16 image embedding
        down_spatial_times=1,
        # Random towers have logit scale 1/0.07 and near-zero cosines: a bias
        # of -2 keeps the filters off saturation (the base's -10 suits
        # pretrained CLIP, whose filters would otherwise get no gradient).
        filter_cfg=dict(init_bias=-2.0)),
    decode_head=dict(
        sam_arch=dict(
            _delete_=True,
            image_size=128,
            patch_size=8,  # 16x16 image embedding, 64x64 low-res masks
            encoder_embed_dim=64,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_window_size=8,
            encoder_global_attn_indexes=(1, ),
            prompt_embed_dim=64,
            decoder_mlp_dim=256,
            decoder_num_heads=2,
            iou_head_hidden_dim=64),
        checkpoint=None,
        encoder_tuning=full,
        # Dice next to BCE: targets cover 2-12 % of a scene, BCE alone first
        # settles on "all background".
        loss_decode=[
            dict(
                type='CrossEntropyLoss',
                use_sigmoid=True,
                avg_non_ignore=True,
                loss_weight=5.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0),
        ]))

# 3-4 objects, colour / shape expressions ("the red circle", "the white
# object", "the cross"); position and size expressions
# (expression_types=('attribute', 'position', 'size')) need longer training.
scenes = dict(num_objects=(3, 4), expression_types=('attribute', ))
train_dataloader = dict(
    batch_size=16, dataset=dict(num_samples=4000, **scenes))
val_dataloader = dict(dataset=scenes)
test_dataloader = dict(dataset=scenes)

# fp32; a step with a NaN/inf loss or gradient is skipped (counted in the
# log as skipped_steps), 20 in a row stop training
optim_wrapper = dict(
    type='SkipNonFiniteOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=1.0),
    max_consecutive_skips=20)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.01,
        by_epoch=False,
        begin=100,
        end=cosine_iters,
        T_max=cosine_iters - 100),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=val_interval,
        max_keep_ckpts=1,
        save_best='refer/mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # draws every 50th validation sample (image | ground truth | prediction,
    # captioned with the expression) under <work_dir>/<time>/vis_data/
    visualization=dict(
        type='ReferringVisualizationHook', draw=True, interval=50))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
