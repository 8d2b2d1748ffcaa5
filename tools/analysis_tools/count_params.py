# Parameter counts of RSRefSeg configs, built on PyTorch's meta device.
"""Count the parameters of RSRefSeg configs without allocating them.

Every config's model is built on the ``meta`` device (shapes only: no
memory, no weight file read; the config's pretrained paths are cleared),
and its parameters are counted: all, trainable (what the optimizer
constructor hands to AdamW: LoRA, prompter, SAM prompt encoder and mask
decoder), and per part (backbone, neck, decode head). The counts do not
depend on the machine. SigLIP configs need a SentencePiece model to build
their tokenizer: the ``spiece.model`` of the SigLIP folder, or one trained
by ``tools/misc/train_spiece.py`` (``--siglip-tokenizer``).

Example::

    python tools/misc/train_spiece.py work_dirs/spiece
    python tools/analysis_tools/count_params.py configs/rsrefseg/*.py \\
        --siglip-tokenizer work_dirs/spiece/spiece.model
"""
import argparse
import os.path as osp
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

import torch

#: The parts counted on their own.
PARTS = ('backbone', 'neck', 'decode_head')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--siglip-tokenizer',
        help='spiece.model for the configs with a SigLIPBackbone')
    return parser.parse_args(argv)


def build_on_meta(config: str,
                  siglip_tokenizer: Optional[str] = None) -> torch.nn.Module:
    """Build a config's model on the meta device.

    Args:
        config (str): Config file.
        siglip_tokenizer (str, optional): ``spiece.model`` for a
            ``SigLIPBackbone``.

    Returns:
        nn.Module: The model, every parameter on ``meta``.

    Raises:
        ValueError: A SigLIP config without ``siglip_tokenizer``.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401
    from rsrefseg_mm.utils import drop_pretrained_checkpoints
    cfg = Config.fromfile(config)
    drop_pretrained_checkpoints(cfg.model)
    if cfg.model.backbone.get('type') == 'SigLIPBackbone':
        if not siglip_tokenizer:
            raise ValueError(
                f'{config}: a SigLIPBackbone needs a spiece.model; pass '
                '--siglip-tokenizer (e.g. one written by '
                'tools/misc/train_spiece.py)')
        cfg.model.backbone.tokenizer = siglip_tokenizer
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with torch.device('meta'), _linspace_on_cpu():
        return MODELS.build(cfg.model)


@contextmanager
def _linspace_on_cpu() -> Iterator[None]:
    """``torch.linspace`` without a ``device`` makes CPU tensors.

    sam2's Hiera reads its drop-path rates with
    ``torch.linspace(...)[i].item()`` while it builds, which a meta tensor
    cannot answer; those few values (and any buffer made from a linspace)
    stay on the CPU, the parameters on ``meta``.
    """
    linspace = torch.linspace

    def cpu_linspace(*args, **kwargs):
        kwargs.setdefault('device', 'cpu')
        return linspace(*args, **kwargs)

    torch.linspace = cpu_linspace
    try:
        yield
    finally:
        torch.linspace = linspace


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Parameter counts of an RSRefSeg.

    Args:
        model (nn.Module): The segmentor.

    Returns:
        dict: ``total``, ``trainable`` and one entry per :data:`PARTS`.
    """
    params = list(model.parameters())
    counts = dict(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad))
    for part in PARTS:
        counts[part] = sum(p.numel()
                           for p in getattr(model, part).parameters())
    return counts


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    """Print one Markdown row per config.

    Returns:
        list[dict]: ``config`` (file name) and :func:`count_parameters`'s
        counts, per config.
    """
    args = parse_args(argv)
    rows = []
    for config in args.configs:
        model = build_on_meta(config, args.siglip_tokenizer)
        rows.append(
            dict(config=osp.basename(config), **count_parameters(model)))
    print(f'torch {torch.__version__}; parameters in millions\n')
    print('| config | all | trainable | ' + ' | '.join(PARTS) + ' |')
    print('| --- ' * (3 + len(PARTS)) + '|')
    for row in rows:
        cells = [f'{row[k] / 1e6:.2f}' for k in ('total', 'trainable', *PARTS)]
        print(f'| {row["config"]} | ' + ' | '.join(cells) + ' |')
    return rows


if __name__ == '__main__':
    main()
