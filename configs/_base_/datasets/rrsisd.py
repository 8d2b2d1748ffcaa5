# RRSIS-D (RMSIN release, REFER layout): 12,181 / 1,740 / 3,481 expressions
# (train / val / test), 800x800 masks. Check a download with
#   python tools/dataset_converters/rrsisd.py data/rrsisd
# data/rrsisd/
#   refs(unc).p  instances.json  images/rrsisd/JPEGImages/*.jpg
# As downloaded, some JPEGs are 1-13 px off their mask (800x801, 801x800,
# 800x787): the dataset reports them once when built, and
# LoadReferringAnnotations aligns their masks (top-left; padding ignored)
# within `size_tolerance` pixels per side; a larger difference is an error.
# Missing image files are an error unless `skip_missing_images=True` leaves
# their samples out, e.g.
#   --cfg-options train_dataloader.dataset.skip_missing_images=True
# `no_target_ratio` > 0 adds that share of no-target pairs (an image with an
# expression of a category absent from it; empty mask) for generalized
# referring; 0 here, as RRSIS-D and the paper have none. Annotation files
# are bounded (`max_annotation_bytes`, `max_mask_pixels`; docs/datasets.md).
# RSRefSeg's recipe: resize to 1024x1024 without keeping the aspect ratio, no
# augmentation. The test pipeline decodes the mask after Resize, so the
# ground truth stays at the original size, where ReferringIoUMetric scores.
# Scene inference (rsrefseg_core.scene.ScenePredictor, demo/image_demo.py
# --slide) reads windows of this many file pixels, the scale of the
# training images (RRSIS-D's 800 x 800 images), each resized to the model
# input.
scene_window_size = 800
dataset_type = 'RRSISDDataset'
data_root = 'data/rrsisd'
crop_size = (1024, 1024)
size_tolerance = 16

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
        ann_file='refs(unc).p',
        instances_file='instances.json',
        size_tolerance=size_tolerance,
        skip_missing_images=False,
        no_target_ratio=0.0,
        no_target_seed=0,
        data_prefix=dict(img_path='images/rrsisd/JPEGImages'),
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
        ann_file='refs(unc).p',
        instances_file='instances.json',
        size_tolerance=size_tolerance,
        skip_missing_images=False,
        no_target_ratio=0.0,
        data_prefix=dict(img_path='images/rrsisd/JPEGImages'),
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
        ann_file='refs(unc).p',
        instances_file='instances.json',
        size_tolerance=size_tolerance,
        skip_missing_images=False,
        no_target_ratio=0.0,
        data_prefix=dict(img_path='images/rrsisd/JPEGImages'),
        test_mode=True,
        pipeline=test_pipeline))
# oIoU / mIoU / Pr@0.5..0.9 at the original size; eval_size=(480, 480)
# compares with LAVT / RMSIN numbers.
val_evaluator = dict(type='ReferringIoUMetric')
test_evaluator = val_evaluator
