"""A content hash of a checkpoint's weights, written with the checkpoint
and checked when it is loaded.

``torch.load`` does not check the CRCs of a zip checkpoint's records: bytes
changed inside a tensor's record (a disk or copy error, an edit) load
without an error, and the model answers differently. The checkpoints this
project writes (:class:`~rsrefseg_mm.engine.RSRefSegRunner`, the model
converters in ``tools/model_converters``) therefore carry
``meta['state_dict_sha256']``: the sha256 of their ``state_dict``
(:func:`state_dict_sha256`), which
:func:`~rsrefseg_mm.utils.safe_torch_load` recomputes on every load.
"""
import hashlib
from typing import Any, Mapping, MutableMapping, Optional

import torch

#: Key of ``checkpoint['meta']`` that holds the hash.
HASH_KEY = 'state_dict_sha256'
#: Bytes hashed at a time (a tensor on a GPU is copied to the CPU in
#: pieces of this size).
CHUNK_BYTES = 64 * 2**20


class UnhashableTensorError(ValueError):
    """A state dict entry whose bytes cannot be hashed (sparse, nested,
    meta, or a view that reaches past its storage)."""


def _tensor_bytes(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s elements as a flat uint8 tensor (a view when it is
    contiguous, else a copy of its elements only)."""
    if tensor.layout != torch.strided or tensor.is_nested or \
            tensor.device.type == 'meta':
        raise UnhashableTensorError(
            f'{name}: a {tensor.layout} tensor on {tensor.device} has no '
            'plain bytes to hash')
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes > tensor.untyped_storage().nbytes():
        raise UnhashableTensorError(
            f'{name}: a view of {tensor.numel()} elements over a storage of '
            f'{tensor.untyped_storage().nbytes()} bytes (a broadcast view '
            'whose copy would be larger than the file)')
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 of a state dict's tensors.

    For every entry, in the order of the sorted names: the name, and for a
    tensor its dtype, its shape and its bytes in row-major order (computed
    on the CPU, a piece at a time, so a tensor on a GPU hashes the same as
    its CPU copy; the bytes are the host's, little-endian on every
    supported platform). Entries that are not tensors add their name and
    type only.

    Args:
        state_dict (Mapping[str, Any]): ``model.state_dict()`` or a loaded
            checkpoint's ``state_dict``.

    Returns:
        str: 64 hex digits.

    Raises:
        UnhashableTensorError: A sparse / nested / meta tensor, or a view
            with more elements than its storage holds.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict, key=str):
        value = state_dict[name]
        digest.update(f'{name}\0'.encode('utf-8', 'surrogatepass'))
        if not isinstance(value, torch.Tensor):
            digest.update(f'{type(value).__qualname__}\0'.encode())
            continue
        flat = _tensor_bytes(name, value)
        digest.update(f'{value.dtype}{tuple(value.shape)}\0'.encode())
        for start in range(0, flat.numel(), CHUNK_BYTES):
            piece = flat[start:start + CHUNK_BYTES].cpu()
            digest.update(memoryview(piece.numpy()))
    return digest.hexdigest()


def add_state_dict_hash(checkpoint: MutableMapping[str, Any]) -> str:
    """Store the hash of ``checkpoint['state_dict']`` in
    ``checkpoint['meta']`` (created if absent).

    Args:
        checkpoint (dict): With a ``state_dict``; changed in place.

    Returns:
        str: The hash.

    Raises:
        KeyError: ``checkpoint`` has no ``state_dict``.
        TypeError: Its ``meta`` is not a dict.
    """
    meta = checkpoint.setdefault('meta', {})
    if not isinstance(meta, MutableMapping):
        raise TypeError('checkpoint["meta"] is a '
                        f'{type(meta).__name__}, expected a dict')
    meta[HASH_KEY] = state_dict_sha256(checkpoint['state_dict'])
    return meta[HASH_KEY]


def stored_state_dict_hash(checkpoint: Any) -> Optional[str]:
    """The hash a loaded checkpoint carries (``meta['state_dict_sha256']``),
    or None (official weights, checkpoints of other tools)."""
    if not isinstance(checkpoint, Mapping):
        return None
    meta = checkpoint.get('meta')
    if not isinstance(meta, Mapping):
        return None
    value = meta.get(HASH_KEY)
    return value if isinstance(value, str) else None
