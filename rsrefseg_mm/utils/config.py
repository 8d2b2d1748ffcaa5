"""Config helpers of the tools and the inference API."""
from typing import Any

from ..models.backbones.siglip.siglip_checkpoint import (arch_tokenizer_type,
                                                         siglip_tokenizer_path)

#: Registry name of the hook that ``--compile`` adds.
COMPILE_HOOK = 'CompileHotPathsHook'


def drop_pretrained_checkpoints(model_cfg: Any) -> int:
    """Set every ``checkpoint`` key of a model config to None, in place.

    A checkpoint saved by our runner holds the whole model (CLIP, prompter and
    SAM, base weights included), so testing or running inference from it
    does not need the pretrained CLIP/SAM files the config names for
    training. SigLIP's tokenizer model is not part of the weights: a
    ``SigLIPBackbone`` without an explicit ``tokenizer`` keeps the
    ``spiece.model`` (SigLIP 2 archs: ``tokenizer.model``) of its checkpoint
    folder.

    Args:
        model_cfg (dict | list): The ``model`` part of a config.

    Returns:
        int: How many ``checkpoint`` keys held a path.
    """
    cleared = 0
    if isinstance(model_cfg, dict):
        if model_cfg.get('type') == 'SigLIPBackbone' and \
                not model_cfg.get('tokenizer'):
            model_cfg['tokenizer'] = siglip_tokenizer_path(
                model_cfg.get('checkpoint'),
                arch_tokenizer_type(model_cfg.get('arch')))
        for key in list(model_cfg.keys()):
            if key == 'checkpoint' and isinstance(model_cfg[key], str):
                model_cfg[key] = None
                cleared += 1
            else:
                cleared += drop_pretrained_checkpoints(model_cfg[key])
    elif isinstance(model_cfg, (list, tuple)):
        for item in model_cfg:
            cleared += drop_pretrained_checkpoints(item)
    return cleared


def apply_compile_arg(cfg: Any, mode: str) -> None:
    """Turn ``tools/train.py``/``test.py --compile [MODE]`` into a
    ``CompileHotPathsHook`` in the config's ``custom_hooks``.

    A ``CompileHotPathsHook`` already in ``custom_hooks`` keeps its other
    arguments (``targets``, ``backend``, ...); ``mode`` replaces its mode,
    and ``'default'`` leaves the hook's mode (torch's default when none).

    Args:
        cfg (Config): The config, modified in place.
        mode (str): A ``torch.compile`` mode or ``'default'``.
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    found = [h for h in hooks if h.get('type') == COMPILE_HOOK]
    if not found:
        found = [dict(type=COMPILE_HOOK)]
        hooks += found
    if mode != 'default':
        found[0]['mode'] = mode
    cfg.custom_hooks = hooks
