"""Strict loading of trained checkpoints: a clear error instead of a model
left partly at its initial weights.

mmengine's ``load_checkpoint`` (and so ``mmseg.apis.init_model`` and the
runner's ``load_from``) loads non-strictly by default: a checkpoint of
another config, a pretrained backbone file or a file with renamed keys
loads "successfully" and only logs the unmatched keys. A trained RSRefSeg
checkpoint holds every tensor of its config, so :class:`RSRefSegRunner
<rsrefseg_mm.engine.RSRefSegRunner>` and
:func:`~rsrefseg_mm.apis.init_referring_model` load strictly and raise
:class:`CheckpointMismatchError` (file, counts, first keys, what to do).
"""
from contextlib import contextmanager
from typing import Iterator, List

#: The first line of mmengine's mismatch message (``load_state_dict``).
MMENGINE_MISMATCH = 'The model and loaded state dict do not match exactly'
_KEY_LINES = (('unexpected key in source state_dict: ', 'unexpected'),
              ('missing keys in source state_dict: ', 'missing'))


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not match the model's (strict loading)."""


def summarize_mismatch(message: str, limit: int = 5) -> str:
    """mmengine's mismatch message in one line: counts and the first keys.

    Args:
        message (str): The ``RuntimeError`` text of mmengine's strict
            ``load_state_dict``.
        limit (int): Keys named per kind. Defaults to 5.

    Returns:
        str: E.g. ``'12 missing (e.g. a, b, ...); 1 size mismatch (for x:
        ...)'``.
    """
    parts: List[str] = []
    sizes = []
    for line in message.splitlines():
        line = line.strip()
        for prefix, kind in _KEY_LINES:
            if line.startswith(prefix):
                keys = line[len(prefix):].split(', ')
                more = ', ...' if len(keys) > limit else ''
                parts.append(f'{len(keys)} {kind} '
                             f'(e.g. {", ".join(keys[:limit])}{more})')
        if line.startswith('size mismatch'):
            sizes.append(line)
    if sizes:
        parts.append(f'{len(sizes)} size mismatch ({sizes[0]})')
    return '; '.join(parts) or message


@contextmanager
def checkpoint_mismatch_errors(filename: str, opt_out: str) -> Iterator[None]:
    """Turn mmengine's strict-loading ``RuntimeError`` into a
    :class:`CheckpointMismatchError` that names ``filename``.

    Args:
        filename (str): The checkpoint being loaded.
        opt_out (str): How the caller loads the matching tensors only,
            e.g. ``'strict_load = False in the config'``.
    """
    try:
        yield
    except RuntimeError as error:
        if MMENGINE_MISMATCH not in str(error):
            raise
        raise CheckpointMismatchError(
            f'{filename} does not match the model: '
            f'{summarize_mismatch(str(error))}. A trained RSRefSeg '
            'checkpoint holds every tensor of the config it was trained '
            'with: check the config (checkpoints trained with the authors\' '
            'code convert with tools/model_converters/'
            'rsrefseg_official2mm.py; pretrained CLIP / SigLIP / SAM '
            'weights go to the backbone / decode_head `checkpoint`). To '
            f'load only the matching tensors: {opt_out}.') from None
