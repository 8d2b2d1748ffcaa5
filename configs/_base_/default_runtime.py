# Runtime shared by every rsrefseg-mm config.
default_scope = 'mmseg'
# Registers RSRefSeg's models, datasets, transforms and metrics.
custom_imports = dict(imports=['rsrefseg_mm'], allow_failed_imports=False)
# mmengine Runner whose top-level `compile` key (True or torch.compile
# arguments, e.g. compile = dict(mode='reduce-overhead')) compiles the
# encoder towers and the SAM encoder for train, val and test
# (rsrefseg_mm/engine/runner.py; tools/train.py and test.py build it and
# take --compile; runner_type serves RUNNERS.build).
runner_type = 'RSRefSegRunner'

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='ReferringVisualizer', vis_backends=vis_backends, name='visualizer')
# log_processor comes with the schedule (epoch- or iter-based).
log_level = 'INFO'
load_from = None
resume = False

# tools/test.py --tta wraps the model: it averages the foreground
# probabilities of the views of the dataset's `tta_pipeline`.
tta_model = dict(type='ReferringTTAModel')
