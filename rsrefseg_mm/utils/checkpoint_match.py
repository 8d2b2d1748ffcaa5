"""Strict loading of trained checkpoints: a clear error instead of a model
left partly at its initial weights.

mmengine's ``load_checkpoint`` (and so ``mmseg.apis.init_model`` and the
runner's ``load_from``) loads non-strictly by default: a checkpoint of
another config, a pretrained backbone file or a file with renamed keys
loads "successfully" and only logs the unmatched keys. A trained RSRefSeg
checkpoint holds every tensor of its config, so :class:`RSRefSegRunner
<rsrefseg_mm.engine.RSRefSegRunner>` and
:func:`~rsrefseg_mm.apis.init_referring_model` load through
:func:`load_model_weights`, which compares the checkpoint's keys and shapes
with ``model.state_dict()`` first and raises
:class:`CheckpointMismatchError` (file, counts, first keys, what to do).
"""
import re
from collections import OrderedDict
from typing import Any, List, Mapping, NamedTuple, Sequence, Tuple

import torch.nn as nn
from mmengine.runner import load_state_dict

#: ``(pattern, replacement)`` pairs applied to checkpoint keys (``re.sub``).
RevisePairs = Sequence[Tuple[str, str]]
#: mmengine's default ``revise_keys``: the prefix of wrapped (DDP) models.
DEFAULT_REVISE_KEYS: RevisePairs = ((r'^module\.', ''), )


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not match the model's (strict loading)."""


class StateDictMismatch(NamedTuple):
    """What keeps a state dict from loading strictly into a model.

    Attributes:
        missing (list[str]): Model keys the state dict lacks
            (``num_batches_tracked`` excepted, as mmengine and torch
            tolerate it).
        unexpected (list[str]): State-dict keys the model lacks.
        reshaped (list[tuple[str, tuple, tuple]]): ``(key, checkpoint
            shape, model shape)`` of tensors of another shape (``shape`` is
            None for a value that is not a tensor).
    """
    missing: List[str]
    unexpected: List[str]
    reshaped: List[Tuple[str, Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)

    def summary(self, limit: int = 5) -> str:
        """Counts and the first keys of each kind, in one line.

        Args:
            limit (int): Keys named per kind. Defaults to 5.

        Returns:
            str: E.g. ``'12 missing (e.g. a, b, ...); 1 size mismatch (x:
            checkpoint (3,), model (4,))'``.
        """

        def first(keys: Sequence[str]) -> str:
            more = ', ...' if len(keys) > limit else ''
            return f'e.g. {", ".join(keys[:limit])}{more}'

        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing '
                         f'({first(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected '
                         f'({first(self.unexpected)})')
        if self.reshaped:
            shapes = [
                f'{key}: checkpoint {_shape_text(ckpt)}, model '
                f'{_shape_text(model)}' for key, ckpt, model in self.reshaped
            ]
            parts.append(f'{len(self.reshaped)} size mismatch '
                         f'({first(shapes)})')
        return '; '.join(parts)


def _shape_text(shape: Any) -> str:
    return 'not a tensor' if shape is None else str(tuple(shape))


def _shape(value: Any) -> Any:
    shape = getattr(value, 'shape', None)
    return None if shape is None else tuple(shape)


def state_dict_mismatch(model_state: Mapping[str, Any],
                        state_dict: Mapping[str, Any]) -> StateDictMismatch:
    """Compare a state dict with a model's, as a strict load would.

    Args:
        model_state (Mapping[str, Tensor]): ``model.state_dict()``.
        state_dict (Mapping[str, Tensor]): The checkpoint's tensors (keys
            already revised).

    Returns:
        StateDictMismatch: Empty (falsy) when a strict load succeeds.
    """
    missing = [
        k for k in model_state
        if k not in state_dict and not k.endswith('num_batches_tracked')
    ]
    unexpected = [k for k in state_dict if k not in model_state]
    reshaped = []
    for key, value in state_dict.items():
        if key not in model_state:
            continue
        target = model_state[key]
        if nn.parameter.is_lazy(target):
            continue  # takes the checkpoint's shape
        ckpt_shape, model_shape = _shape(value), tuple(target.shape)
        # torch loads a (1,) tensor into a 0-dim parameter
        if ckpt_shape != model_shape and not (ckpt_shape == (1, )
                                              and model_shape == ()):
            reshaped.append((key, ckpt_shape, model_shape))
    return StateDictMismatch(missing, unexpected, reshaped)


def checkpoint_state_dict(
        checkpoint: Any,
        filename: str,
        revise_keys: RevisePairs = DEFAULT_REVISE_KEYS
) -> 'OrderedDict[str, Any]':
    """The tensors of a loaded checkpoint, keys revised as mmengine does.

    Args:
        checkpoint (dict): The loaded file: ``{'state_dict': ...}`` or a
            state dict.
        filename (str): The file (for the error).
        revise_keys (Sequence[tuple[str, str]]): ``(pattern,
            replacement)`` applied to every key with ``re.sub``. Defaults
            to stripping the ``module.`` prefix.

    Returns:
        OrderedDict: The revised state dict (torch's ``_metadata`` kept).

    Raises:
        TypeError: The file does not hold a dict.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'{filename}: no state_dict found, the file holds '
                        f'a {type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    for pattern, replacement in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, replacement, k), v)
                                 for k, v in state_dict.items())
    state_dict._metadata = metadata
    return state_dict


def load_model_weights(model: nn.Module,
                       checkpoint: Any,
                       filename: str,
                       strict: bool,
                       opt_out: str,
                       revise_keys: RevisePairs = DEFAULT_REVISE_KEYS) -> None:
    """Load a loaded checkpoint's tensors into ``model``.

    With ``strict`` the keys and shapes are compared first: a mismatch
    raises before anything is copied. Without it mmengine's
    ``load_state_dict`` loads what matches and logs the rest.

    Args:
        model (nn.Module): The (unwrapped) model.
        checkpoint (dict): The loaded file.
        filename (str): The file (for messages).
        strict (bool): Refuse missing, unexpected or reshaped tensors.
        opt_out (str): How the caller loads the matching tensors only,
            e.g. ``'strict_load = False in the config'``.
        revise_keys (Sequence[tuple[str, str]]): See
            :func:`checkpoint_state_dict`.

    Raises:
        CheckpointMismatchError: ``strict`` and the tensors do not match.
    """
    state_dict = checkpoint_state_dict(checkpoint, filename, revise_keys)
    if strict:
        mismatch = state_dict_mismatch(model.state_dict(), state_dict)
        if mismatch:
            raise CheckpointMismatchError(
                f'{filename} does not match the model: {mismatch.summary()}.'
                ' A trained RSRefSeg checkpoint holds every tensor of the '
                'config it was trained with: check the config (checkpoints '
                'trained with the authors\' code convert with tools/'
                'model_converters/rsrefseg_official2mm.py; pretrained CLIP '
                '/ SigLIP / SAM weights go to the backbone / decode_head '
                f'`checkpoint`). To load only the matching tensors: '
                f'{opt_out}.')
    load_state_dict(model, state_dict, strict=strict, logger='current')
