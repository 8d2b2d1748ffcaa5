"""CLIP's byte-level BPE tokenizer.

A port of OpenAI CLIP's ``SimpleTokenizer`` as shipped in open_clip
(``open_clip/tokenizer.py``, MIT License, Copyright (c) 2021 OpenAI), kept
token-for-token identical to ``open_clip.tokenize`` with the default
``clean='lower'`` strategy:

* text cleaning: ``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse
  whitespace, lower case;
* pre-tokenisation with the ``regex`` package (Unicode classes ``\\p{L}``,
  ``\\p{N}``);
* byte-level BPE with the 49,152-entry merge list
  ``bpe_simple_vocab_16e6.txt.gz`` shipped inside this package (no download);
* ``<start_of_text>`` (49406) ... ``<end_of_text>`` (49407), zero padded to the
  context length (77). Too long sequences are cut and the last kept position
  is overwritten by ``<end_of_text>``, as open_clip does.

open_clip itself is not a runtime dependency of rsrefseg_mm (it is only used
by the tests as the reference).
"""
import gzip
import html
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple, Union

import ftfy
import regex as re
import torch

DEFAULT_BPE_PATH = osp.join(
    osp.dirname(osp.abspath(__file__)), 'bpe_simple_vocab_16e6.txt.gz')
DEFAULT_CONTEXT_LENGTH = 77


@lru_cache()
def bytes_to_unicode() -> Dict[int, str]:
    """Map every utf-8 byte to a printable unicode character.

    Returns:
        dict[int, str]: byte value -> unicode character (256 entries).
    """
    bs = (
        list(range(ord('!'),
                   ord('~') + 1)) + list(range(ord('¡'),
                                               ord('¬') + 1)) +
        list(range(ord('®'),
                   ord('ÿ') + 1)))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word: Tuple[str, ...]) -> set:
    """Set of adjacent symbol pairs of a word (tuple of symbols)."""
    return set(zip(word[:-1], word[1:]))


def basic_clean(text: str) -> str:
    """Fix mojibake with ftfy and unescape HTML entities (twice)."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    """Collapse every run of whitespace to one space and strip."""
    return ' '.join(text.split()).strip()


class CLIPTokenizer:
    """OpenAI CLIP BPE tokenizer (see the module docstring).

    Args:
        bpe_path (str): The gzipped merge list. Defaults to the file shipped
            in ``rsrefseg_mm/models/backbones/clip``.
        context_length (int): Length of the returned id rows. Defaults to 77.

    Examples:
        >>> tok = CLIPTokenizer()
        >>> tok(['the white car on the left']).shape
        torch.Size([1, 77])
    """

    def __init__(self,
                 bpe_path: str = DEFAULT_BPE_PATH,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if not osp.isfile(bpe_path):
            raise FileNotFoundError(
                f'CLIP BPE vocabulary {bpe_path} not found; it is shipped '
                'with rsrefseg_mm (models/backbones/clip/bpe_simple_vocab_16e6.txt.gz)'
                ' - reinstall the package (`pip install -e .`).')
        if context_length < 2:
            raise ValueError(
                f'context_length must be >= 2, got {context_length}')
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path) as f:
            merges = f.read().decode('utf-8').split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + '</w>' for v in vocab]
        vocab.extend(''.join(merge) for merge in merges)
        special_tokens = ['<start_of_text>', '<end_of_text>']
        vocab.extend(special_tokens)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {t: t for t in special_tokens}
        self.pat = re.compile(
            '|'.join(special_tokens) +
            r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE)
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder['<start_of_text>']
        self.eot_token_id = self.encoder['<end_of_text>']
        self.context_length = context_length

    @staticmethod
    def clean(text: str) -> str:
        """Cleaning applied before BPE: ftfy, HTML, whitespace, lower."""
        return whitespace_clean(basic_clean(text)).lower()

    def bpe(self, token: str) -> str:
        """Apply the BPE merges to one pre-token (byte-encoded string).

        Returns:
            str: The BPE symbols joined by spaces, last one ending in
            ``</w>``.
        """
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>', )
        pairs = get_pairs(word)
        if not pairs:
            return token + '</w>'
        while True:
            bigram = min(
                pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: List[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if (word[i] == first and i < len(word) - 1
                        and word[i + 1] == second):
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = ' '.join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: List[int] = []
        for token in re.findall(self.pat, self.clean(text)):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(' '))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text (``</w>`` becomes a space)."""
        text = ''.join(self.decoder[int(i)] for i in ids)
        return bytearray([self.byte_decoder[c] for c in text]).decode(
            'utf-8', errors='replace').replace('</w>', ' ')

    def __call__(self,
                 texts: Union[str, Sequence[str]],
                 context_length: Optional[int] = None) -> torch.Tensor:
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
