# Test (and evaluate) an RSRefSeg checkpoint; MMSegmentation 1.x command line.
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from rsrefseg_mm.engine import RSRefSegRunner as Runner
from rsrefseg_mm.utils import (allow_unsafe_load, apply_compile_arg,
                               check_local_checkpoint,
                               drop_pretrained_checkpoints,
                               use_gloo_without_cuda)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        help='local checkpoint file (URLs are refused: download first)')
    parser.add_argument(
        '--work-dir',
        help=('if specified, the evaluation metric results will be dumped'
              'into the directory as json'))
    parser.add_argument(
        '--out',
        type=str,
        help='The directory to save output prediction masks (PNG, 0/255) '
        'for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images (image | ground truth | '
        'prediction, captioned with the expression) will be saved; a '
        'relative path is taken under --work-dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle the checkpoint without the safe loader\'s '
        'allow-list (torch.load weights_only=False). Pickles can run code: '
        'only for files you trust')
    parser.add_argument(
        '--compile',
        nargs='?',
        const='default',
        metavar='MODE',
        help='torch.compile the text/image towers and the SAM image '
        'encoder (adds CompileHotPathsHook to custom_hooks); MODE is a '
        'torch.compile mode, e.g. reduce-overhead (CUDA graphs)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s tta_pipeline (scales x '
        'flips; flips swap left/right in the expression) merged by its '
        'tta_model (mean foreground probability)')
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    return args


def trigger_visualization_hook(cfg: Config,
                               args: argparse.Namespace) -> Config:
    """Turn on the visualization hook for ``--show`` / ``--show-dir``."""
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        # Turn on visualization
        visualization_hook['draw'] = True
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = osp.join(cfg.work_dir, args.show_dir)
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks.'
            'refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"')

    return cfg


def main() -> None:
    args = parse_args()
    # before anything is built (the runner's loader refuses it as well)
    check_local_checkpoint(args.checkpoint)

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    # overrides first: the environment decisions below must see them
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    use_gloo_without_cuda(cfg)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    # The trained checkpoint holds every weight: the pretrained CLIP/SAM
    # files named for training are not needed (nor read) for testing.
    drop_pretrained_checkpoints(cfg.model)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        missing = [k for k in ('tta_pipeline', 'tta_model') if k not in cfg]
        if missing:
            raise KeyError(
                f'--tta: {args.config} defines no {" / ".join(missing)}; '
                'inherit a dataset config of configs/_base_/datasets/ '
                '(tta_pipeline) and configs/_base_/default_runtime.py '
                '(tta_model)')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    # add output_dir in metric
    if args.out is not None:
        evaluators = cfg.test_evaluator
        if not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        for evaluator in evaluators:
            evaluator['output_dir'] = args.out

    if args.compile is not None:
        apply_compile_arg(cfg, args.compile)

    # --unsafe-load holds for this thread while the runner loads the
    # checkpoint, and ends with the test
    with allow_unsafe_load(args.unsafe_load):
        # mmengine's Runner, strict loading through the safe loader
        runner = Runner.from_cfg(cfg)
        runner.test()


if __name__ == '__main__':
    main()
