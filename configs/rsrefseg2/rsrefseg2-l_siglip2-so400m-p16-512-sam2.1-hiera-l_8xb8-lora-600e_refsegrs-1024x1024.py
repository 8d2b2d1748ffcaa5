# RSRefSeg 2 (Hiera-L), the authors' RefSegRS model: the RRSIS-D model and
# recipe with the authors' RefSegRS numbers: 600 epochs, lr 2e-4, the base lr
# until epoch 60, then a cosine of period 1,080 epochs (1.8 x 600) to epoch
# 600 (the lr ends at 0.51x).
_base_ = [
    '../_base_/models/rsrefseg2.py', '../_base_/datasets/refsegrs.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_rsrefseg2_300e_adamw.py'
]
crop_size = (1024, 1024)
max_epochs = 600
val_interval = 10
base_lr = 2e-4

data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
train_dataloader = dict(batch_size=8, num_workers=8)
val_evaluator = dict(type='ReferringIoUMetric', generalized=True)
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=int(1.8 * max_epochs),
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=int(0.1 * max_epochs),
        end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
auto_scale_lr = dict(enable=False, base_batch_size=64)
