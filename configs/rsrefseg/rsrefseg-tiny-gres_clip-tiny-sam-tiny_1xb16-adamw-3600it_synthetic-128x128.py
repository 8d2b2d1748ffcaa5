# The scene benchmark's model: the `make demo` recipe (generalized
# referring, windows of scenes, pretrained tiny towers) trained 3x longer on
# 3x the pairs, ~15 min on 2 CPU cores. `make demo`'s 8-minute model binds
# colours to shapes too loosely to keep the hundreds of windows of a scene
# quiet; this one reaches test mIoU 95.3 (83.8) and, with a window counting
# from presence 0.999, finds the referents of the scene benchmark and leaves
# its no-target scenes empty (docs/large_scenes.md#scene-benchmark).
#
# Train after `make demo` (or tools/misc/pretrain_demo_clip.py on the base
# config), from its pretrained towers:
#   python tools/train.py THIS_CONFIG --cfg-options \
#       model.backbone.checkpoint=work_dirs/demo/clip_pretrain.pth
_base_ = './rsrefseg-tiny-gres_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py'  # noqa: E501
max_iters = 3600
val_interval = 1800
# a window of a scene counts from presence 0.999: the threshold that
# separated the most expressions, with and without the flip check, on the
# scenes of seeds 100-109 (not the benchmark's 0-9)
model = dict(decode_head=dict(presence_cfg=dict(scene_threshold=0.999)))
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(_base_.scene_pairs, num_samples=12000),
        dict(_base_.window_pairs, num_samples=9000)
    ]))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.01,
        by_epoch=False,
        begin=100,
        end=max_iters,
        T_max=max_iters - 100),
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
