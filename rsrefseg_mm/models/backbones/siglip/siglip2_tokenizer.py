"""SigLIP 2's Gemma SentencePiece tokenizer, returning torch ids.

A thin wrapper of :class:`rsrefseg_core.tokenizers.GemmaSentencePiece`
(transformers' ``GemmaTokenizer`` / ``GemmaTokenizerFast`` as the SigLIP 2
folders configure them, id for id, padded to the 64 positions; NumPy only)
that returns torch tensors and logs truncated expressions.
"""
import logging
from typing import Sequence, Tuple

import torch
from mmengine.logging import print_log

from rsrefseg_core.tokenizers import GemmaSentencePiece


class SigLIP2Tokenizer(GemmaSentencePiece):
    """Tokenize expressions for SigLIP 2's text tower (torch output).

    Same arguments as :class:`~rsrefseg_core.tokenizers.GemmaSentencePiece`
    (``model_file``, ``context_length`` 64, ``lowercase`` True,
    ``eos_token``, ``pad_token``, ``bos_token``, ``unk_token``).
    """

    def tokenize(self,
                 texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a batch to fixed-length ids.

        Args:
            texts (Sequence[str]): B expressions.

        Returns:
            tuple[Tensor, Tensor]: ids (B, context_length) long, padded with
            ``pad_id`` (``<pad>``, 0) on the right; and the mask
            (B, context_length) bool, True on the expression's tokens and its
            EOS.
        """
        ids, mask, truncated = super().tokenize(texts)
        L = self.context_length
        for i, n in truncated:
            print_log(
                f'SigLIP 2 tokenizer: expression {i} of the batch has {n} '
                f'tokens (EOS included); {n - L} dropped to fit the context '
                f'length {L}: {texts[i]!r}',
                logger='current',
                level=logging.WARNING)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def __call__(self, texts: Sequence[str]):
        """Alias of :meth:`tokenize`."""
        return self.tokenize(texts)


__all__ = ['SigLIP2Tokenizer']
