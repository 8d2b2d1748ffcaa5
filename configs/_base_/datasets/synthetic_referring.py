# Synthetic referring scenes generated in memory (no files): 3-5 coloured
# shapes on a textured background, one expression per image ("the red
# circle", "the leftmost square", "the largest white object", ...). Used by
# the CPU demo and the tests. Scenes are deterministic per (seed, split,
# index) and the splits never share a scene.
# The data infos already hold the image and mask, so the pipelines start at
# Resize; the test pipeline restores the original-size ground truth with
# LoadReferringAnnotations (from the in-memory `referring_mask`).
dataset_type = 'SyntheticReferringDataset'
img_size = 128
crop_size = (128, 128)
seed = 0
num_objects = (3, 5)

train_pipeline = [
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='PackReferringInputs'),
]
test_pipeline = [
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
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        split='train',
        num_samples=2000,
        img_size=img_size,
        seed=seed,
        num_objects=num_objects,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        split='val',
        num_samples=200,
        img_size=img_size,
        seed=seed,
        num_objects=num_objects,
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        split='test',
        num_samples=200,
        img_size=img_size,
        seed=seed,
        num_objects=num_objects,
        test_mode=True,
        pipeline=test_pipeline))
val_evaluator = dict(type='ReferringIoUMetric')
test_evaluator = val_evaluator
