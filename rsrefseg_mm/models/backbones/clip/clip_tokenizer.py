"""CLIP's byte-level BPE tokenizer, returning torch ids.

A thin wrapper of :class:`rsrefseg_core.tokenizers.CLIPBPE` (CLIP's BPE,
ids equal to ``open_clip.tokenize``), which the ONNX Runtime predictor uses
without torch; MMSegmentation's ``SimpleTokenizer`` gives the same ids but
imports torch. The merge list is the ``bpe_simple_vocab_16e6.txt.gz`` that
MMSegmentation ships.
"""
from typing import List, Sequence, Union

import torch
from mmseg.utils.tokenizer import default_bpe

from rsrefseg_core.tokenizers import CLIPBPE, basic_clean, whitespace_clean

#: The gzipped merge list shipped with MMSegmentation.
DEFAULT_BPE_PATH = default_bpe()
DEFAULT_CONTEXT_LENGTH = 77


class CLIPTokenizer(CLIPBPE):
    """OpenAI CLIP BPE tokenizer with torch output.

    Args:
        bpe_path (str): The gzipped merge list. Defaults to MMSegmentation's
            ``mmseg/utils/bpe_simple_vocab_16e6.txt.gz``.
        context_length (int): Length of the returned id rows. Defaults to 77.

    Examples:
        >>> tok = CLIPTokenizer()
        >>> tok(['the white car on the left']).shape
        torch.Size([1, 77])
    """

    def __init__(self,
                 bpe_path: str = DEFAULT_BPE_PATH,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        super().__init__(bpe_path, context_length)

    def __call__(self,
                 texts: Union[str, Sequence[str]],
                 context_length: int = None) -> torch.Tensor:
        """Ids (N, context_length) long: ``[SOT, ..., EOT, 0, ...]``; too
        long rows are truncated and end with EOT."""
        return torch.from_numpy(super().__call__(texts, context_length))


__all__: List[str] = [
    'CLIPTokenizer', 'DEFAULT_BPE_PATH', 'DEFAULT_CONTEXT_LENGTH',
    'basic_clean', 'whitespace_clean'
]
