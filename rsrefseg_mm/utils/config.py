"""Config helpers."""
from typing import Any


def drop_pretrained_checkpoints(model_cfg: Any) -> int:
    """Set every ``checkpoint`` key of a model config to None, in place.

    A checkpoint saved by our runner holds the whole model (CLIP, prompter and
    SAM, base weights included), so testing or running inference from it
    does not need the pretrained CLIP/SAM files the config names for
    training.

    Args:
        model_cfg (dict | list): The ``model`` part of a config.

    Returns:
        int: How many ``checkpoint`` keys held a path.
    """
    cleared = 0
    if isinstance(model_cfg, dict):
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
