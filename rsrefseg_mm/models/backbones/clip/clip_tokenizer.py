"""CLIP's byte-level BPE tokenizer, on top of MMSegmentation's.

The BPE itself is :class:`mmseg.utils.tokenizer.SimpleTokenizer` (OpenAI
CLIP's tokenizer with the merge list ``bpe_simple_vocab_16e6.txt.gz`` that
MMSegmentation ships); its ids equal ``open_clip.tokenize`` with the default
``clean='lower'`` strategy (ftfy, HTML unescaped twice, whitespace collapsed,
lower case). :class:`CLIPTokenizer` adds what the backbone needs around it:
a configurable context length, a type check naming the bad expression and
``<start_of_text>`` (49406) ... ``<end_of_text>`` (49407) rows, zero padded;
too long rows are cut and end with ``<end_of_text>``, as open_clip does.
"""
from typing import List, Sequence, Union

import torch
from mmseg.utils.tokenizer import (SimpleTokenizer, basic_clean, default_bpe,
                                   whitespace_clean)

#: The gzipped merge list shipped with MMSegmentation.
DEFAULT_BPE_PATH = default_bpe()
DEFAULT_CONTEXT_LENGTH = 77


class CLIPTokenizer:
    """OpenAI CLIP BPE tokenizer (see the module docstring).

    Args:
        bpe_path (str): The gzipped merge list. Defaults to the one shipped
            with MMSegmentation (``mmseg/utils/bpe_simple_vocab_16e6.txt.gz``).
        context_length (int): Length of the returned id rows. Defaults to 77.

    Examples:
        >>> tok = CLIPTokenizer()
        >>> tok(['the white car on the left']).shape
        torch.Size([1, 77])
    """

    def __init__(self,
                 bpe_path: str = DEFAULT_BPE_PATH,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if context_length < 2:
            raise ValueError(
                f'context_length must be >= 2, got {context_length}')
        try:
            self.bpe = SimpleTokenizer(bpe_path)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'CLIP BPE vocabulary {bpe_path} not found; MMSegmentation '
                'ships it as mmseg/utils/bpe_simple_vocab_16e6.txt.gz - '
                'reinstall mmsegmentation or pass an existing bpe_path') from e
        self.vocab_size = self.bpe.vocab_size
        self.sot_token_id = self.bpe.encoder['<start_of_text>']
        self.eot_token_id = self.bpe.encoder['<end_of_text>']
        self.context_length = context_length

    @staticmethod
    def clean(text: str) -> str:
        """Cleaning applied before BPE: ftfy, HTML, whitespace, lower."""
        return whitespace_clean(basic_clean(text)).lower()

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without start/end tokens."""
        return self.bpe.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text (``</w>`` becomes a space)."""
        return self.bpe.decode([int(i) for i in ids])

    def __call__(self,
                 texts: Union[str, Sequence[str]],
                 context_length: int = None) -> torch.Tensor:
        """Tokenize one or more strings.

        Args:
            texts (str | Sequence[str]): Input text(s).
            context_length (int, optional): Row length; defaults to
                ``self.context_length``.

        Returns:
            torch.Tensor: Ids of shape (N, context_length), dtype long; rows
            are ``[SOT, ..., EOT, 0, ...]``. Too long rows are truncated and
            end with EOT.
        """
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f'text {i} must be a str, got '
                                f'{type(text).__name__}: {text!r}')
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            result[i, :len(ids)] = torch.tensor(ids)
        return result


__all__ = [
    'CLIPTokenizer', 'DEFAULT_BPE_PATH', 'DEFAULT_CONTEXT_LENGTH',
    'basic_clean', 'whitespace_clean'
]
