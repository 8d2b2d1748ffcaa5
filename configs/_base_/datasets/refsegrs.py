# RefSegRS (LGCE, Yuan et al. 2024): 4,420 image-expression pairs.
# data/refsegrs/
#   images/<id>.tif  masks/<id>.tif  output_phrase_{train,val,test}.txt
# Each phrase-file line is "<image_id> <sentence>"; masks are 0/255.
# Same recipe as RRSIS-D: resize to 1024x1024, no augmentation; the test
# pipeline keeps the ground truth at the original size.
# Scene inference (rsrefseg_core.scene.ScenePredictor, demo/image_demo.py
# --slide) reads windows of this many file pixels, the scale of the
# training images (RefSegRS's 512 x 512 images), each resized to the model
# input.
scene_window_size = 512
dataset_type = 'RefSegRSDataset'
data_root = 'data/refsegrs'
crop_size = (1024, 1024)

train_pipeline = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='PackReferringInputs'),
]
test_pipeline = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]
# tools/test.py --tta: 3 scales x (as is, flipped left-right); the flip
# also swaps left/right, leftmost/rightmost, west/east ... in the expression
# (ReferringRandomFlip), and ReferringTTAModel averages the views'
# foreground probabilities at the original image size.
tta_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadReferringImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(crop_size[0] * r), int(crop_size[1] * r)),
                    keep_ratio=False) for r in tta_ratios
            ],
            [
                dict(
                    type='ReferringRandomFlip',
                    prob=0.,
                    direction='horizontal'),
                dict(
                    type='ReferringRandomFlip',
                    prob=1.,
                    direction='horizontal'),
            ],
            [dict(type='LoadReferringAnnotations')],
            [dict(type='PackReferringInputs')],
        ])
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
# batch 1: mmseg's inference() needs equal ori_shape within a batch
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        test_mode=True,
        pipeline=test_pipeline))
val_evaluator = dict(type='ReferringIoUMetric')
test_evaluator = val_evaluator
