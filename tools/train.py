# Train an RSRefSeg model (the command line of MMSegmentation 1.x train.py).
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import FlexibleRunner
from mmseg.registry import RUNNERS

from rsrefseg_mm.engine import RSRefSegRunner as Runner
from rsrefseg_mm.utils import (allow_unsafe_load, apply_compile_arg,
                               use_gloo_without_cuda)

# the mixed-precision wrapper --amp puts in place of an fp32 one (the
# non-finite step guard, with max_consecutive_skips, is kept)
AMP_OPTIM_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'SkipNonFiniteOptimWrapper': 'SkipNonFiniteAmpOptimWrapper',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (bfloat16 unless '
        'the config sets optim_wrapper.dtype; mmengine\'s AmpOptimWrapper '
        'needs a GPU, NPU, MLU or MUSA device)')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle checkpoints (load_from, --resume, pretrained weight '
        'files) without the safe loader\'s allow-list (torch.load '
        'weights_only=False). Pickles can run code: only for files you '
        'trust')
    parser.add_argument(
        '--compile',
        nargs='?',
        const='default',
        metavar='MODE',
        help='torch.compile the text/image towers and the SAM image '
        'encoder (adds CompileHotPathsHook to custom_hooks); MODE is a '
        'torch.compile mode, e.g. max-autotune-no-cudagraphs')
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
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to `tools/train.py` instead
    # of `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def runner_class(cfg: Config) -> type:
    """The runner a config trains with.

    mmengine's ``FlexibleRunner`` (or a subclass) when ``runner_type`` names
    one: its ``strategy`` (``DeepSpeedStrategy``, ``FSDPStrategy``, ...)
    builds, wraps and checkpoints the model, as in mmengine's and
    mmpretrain's ``tools/train.py``. Otherwise :class:`RSRefSegRunner`
    (mmengine's ``Runner`` with the safe, strict checkpoint loading), for
    any other ``runner_type``, as before.

    Args:
        cfg (Config): The whole config.

    Returns:
        type: The runner class; its ``from_cfg`` builds the runner.

    Raises:
        KeyError: ``runner_type`` is a name no runner registry knows.
    """
    runner_type = cfg.get('runner_type', None)
    if isinstance(runner_type, str):
        cls = RUNNERS.get(runner_type)
        if cls is None:
            raise KeyError(f'runner_type {runner_type!r} is not registered '
                           '(mmseg / mmengine RUNNERS)')
    else:
        cls = runner_type
    if isinstance(cls, type) and issubclass(cls, FlexibleRunner):
        return cls
    return Runner


def main() -> None:
    args = parse_args()

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

    runner_cls = runner_class(cfg)

    # enable automatic-mixed-precision training (bf16 by default)
    if args.amp is True:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'DeepSpeedOptimWrapper':
            raise ValueError(
                '--amp does not apply to DeepSpeedStrategy: DeepSpeed sets '
                'the precision itself (strategy.bf16 / strategy.fp16)')
        if optim_wrapper in AMP_OPTIM_WRAPPERS.values():
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper in AMP_OPTIM_WRAPPERS, (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'one of {tuple(AMP_OPTIM_WRAPPERS)} but got {optim_wrapper}.')
            cfg.optim_wrapper.type = AMP_OPTIM_WRAPPERS[optim_wrapper]
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    # resume training
    cfg.resume = args.resume

    if args.compile is not None:
        apply_compile_arg(cfg, args.compile)

    # --unsafe-load holds for this thread while the runner builds the model
    # (pretrained weight files) and trains (load_from / resume), and ends
    # with it
    with allow_unsafe_load(args.unsafe_load):
        # mmengine's Runner, strict loading through the safe loader; or
        # mmengine's FlexibleRunner with the config's strategy
        runner = runner_cls.from_cfg(cfg)
        runner.train()


if __name__ == '__main__':
    main()
