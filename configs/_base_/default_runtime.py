# Runtime shared by every rsrefseg-mm config.
default_scope = 'mmseg'
# Registers RSRefSeg's models, datasets, transforms and metrics.
custom_imports = dict(imports=['rsrefseg_mm'], allow_failed_imports=False)
# mmengine's Runner, checkpoints (load_from, resume) read through the safe
# loader's allow-list (rsrefseg_mm/engine/runner.py); tools/train.py and
# test.py build it, runner_type serves RUNNERS.build.
runner_type = 'RSRefSegRunner'
# torch.compile of the towers and the SAM encoder (train, val and test):
# custom_hooks = [dict(type='CompileHotPathsHook', mode='reduce-overhead')]
# or tools/train.py / test.py --compile [MODE].

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
# load_from / resume / tools/test.py checkpoints must match the model
# exactly (CheckpointMismatchError names the file and keys); False loads
# the matching tensors and logs the rest (mmengine's default)
strict_load = True

# tools/test.py --tta wraps the model: it averages the foreground
# probabilities of the views of the dataset's `tta_pipeline`.
tta_model = dict(type='ReferringTTAModel')
