"""Fixed-length batches of SentencePiece ids (SigLIP and SigLIP 2)."""
from typing import List, Sequence, Tuple

import numpy as np


def pad_to_context(
        rows: Sequence[List[int]], context_length: int, pad_id: int,
        eos_id: int) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int]]]:
    """Truncate (keeping the EOS last) and right-pad id rows.

    Args:
        rows (Sequence[list[int]]): B id lists, each ending with ``eos_id``.
        context_length (int): L, the length after truncation and padding.
        pad_id (int): Id of the padding.
        eos_id (int): Id kept at the end of a truncated row.

    Returns:
        tuple: ids (B, L) int64; the mask (B, L) bool, True on each row's
        tokens and EOS; and ``(index, tokens)`` of every truncated row (its
        token count, EOS included).
    """
    L = context_length
    ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=bool)
    truncated = []
    for i, row in enumerate(rows):
        if len(row) > L:
            truncated.append((i, len(row)))
            row = row[:L - 1] + [eos_id]
        ids[i, :len(row)] = row
        mask[i, :len(row)] = True
    return ids, mask, truncated
