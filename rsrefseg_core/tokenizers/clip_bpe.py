"""OpenAI CLIP's byte-level BPE tokenizer, NumPy only.

A port of CLIP's ``SimpleTokenizer`` (``open_clip/tokenizer.py``, MIT
License, Copyright (c) 2021 OpenAI), id for id equal to ``open_clip.tokenize``
with the default ``clean='lower'`` strategy: ftfy, HTML unescaped twice,
whitespace collapsed, lower case; pre-tokenisation with the ``regex`` package;
byte-level BPE with the merge list ``bpe_simple_vocab_16e6.txt.gz`` (shipped
with MMSegmentation and open_clip, copied beside exported models);
``<start_of_text>`` ... ``<end_of_text>`` rows zero padded to the context
length (77), too long rows cut and ended with ``<end_of_text>``.

It imports neither torch nor OpenMMLab, so that the ONNX Runtime predictor
runs without them; ``rsrefseg_mm``'s ``CLIPTokenizer`` wraps it.
"""
import gzip
import heapq
import html
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Sequence, Union

import ftfy
import numpy as np
import regex as re

DEFAULT_CONTEXT_LENGTH = 77
SPECIAL_TOKENS = ('<start_of_text>', '<end_of_text>')


@lru_cache()
def bytes_to_unicode() -> Dict[int, str]:
    """Map every utf-8 byte to a printable unicode character (256)."""
    bs = list(range(ord('!'),
                    ord('~') + 1)) + list(range(
                        ord('¡'),
                        ord('¬') + 1)) + list(range(ord('®'),
                                                    ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def basic_clean(text: str) -> str:
    """Fix mojibake with ftfy and unescape HTML entities (twice)."""
    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def whitespace_clean(text: str) -> str:
    """Collapse every run of whitespace (``regex``'s ``\\s``) to one space."""
    return re.sub(r'\s+', ' ', text).strip()


class CLIPBPE:
    """CLIP's BPE (see the module docstring).

    Args:
        bpe_path (str): The gzipped merge list
            ``bpe_simple_vocab_16e6.txt.gz``.
        context_length (int): Length of the id rows. Defaults to 77.
    """

    def __init__(self,
                 bpe_path: str,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if not osp.isfile(bpe_path):
            raise FileNotFoundError(
                f'CLIP BPE vocabulary {bpe_path} not found (the file '
                'bpe_simple_vocab_16e6.txt.gz that MMSegmentation and '
                'open_clip ship)')
        if context_length < 2:
            raise ValueError(
                f'context_length must be >= 2, got {context_length}')
        self.bpe_path = bpe_path
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path) as f:
            merges = f.read().decode('utf-8').split('\n')
        merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + '</w>' for v in vocab]
        vocab.extend(''.join(m) for m in merges)
        vocab.extend(SPECIAL_TOKENS)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        #: Pre-tokens already split (at most ``cache_size``, oldest first
        #: out), so that many distinct words cannot grow it without bound.
        self.cache = {t: t for t in SPECIAL_TOKENS}
        self.cache_size = 10000
        self.pat = re.compile(
            '|'.join(SPECIAL_TOKENS) +
            r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE)
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        self.context_length = context_length

    @staticmethod
    def clean(text: str) -> str:
        """Cleaning applied before BPE: ftfy, HTML, whitespace, lower."""
        return whitespace_clean(basic_clean(text)).lower()

    def bpe(self, token: str) -> str:
        """The BPE symbols of one byte-encoded pre-token, space-joined.

        Equal to CLIP's loop (merge every occurrence of the lowest-ranked
        adjacent pair, left to right, until no pair has a rank), in
        O(n log n) for n symbols instead of O(n^2): the candidate pairs
        sit in a heap ordered by (rank, position) over a linked list of
        symbols, so a long word costs no more than its length.
        """
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        symbols = list(token[:-1]) + [token[-1] + '</w>']
        n = len(symbols)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        ranks = self.bpe_ranks
        heap = []
        for i in range(n - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None:
                heap.append((rank, i, symbols[i], symbols[i + 1]))
        heapq.heapify(heap)
        while heap:
            rank, i, first, second = heapq.heappop(heap)
            j = nxt[i]
            # stale: a symbol of the pair was merged since it was pushed
            if symbols[i] != first or j >= n or symbols[j] != second:
                continue
            symbols[i] = first + second
            symbols[j] = None
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            for left, right in ((prv[i], i), (i, nxt[i])):
                if left < 0 or right >= n:
                    continue
                pair = (symbols[left], symbols[right])
                new_rank = ranks.get(pair)
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, left) + pair)
        out = ' '.join(s for s in symbols if s is not None)
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        self.cache[token] = out
        return out

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids: List[int] = []
        for token in re.findall(self.pat, self.clean(text)):
            token = ''.join(self.byte_encoder[b]
                            for b in token.encode('utf-8'))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(' '))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text (``</w>`` becomes a space)."""
        text = ''.join(self.decoder[int(i)] for i in ids)
        return bytearray([self.byte_decoder[c] for c in text]).decode(
            'utf-8', errors='replace').replace('</w>', ' ')

    def __call__(self,
                 texts: Union[str, Sequence[str]],
                 context_length: int = None) -> np.ndarray:
        """Ids (N, context_length) int64: ``[SOT, ..., EOT, 0, ...]``.

        Raises:
            TypeError: A text is not a str.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        result = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f'text {i} must be a str, got '
                                f'{type(text).__name__}: {text!r}')
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            result[i, :len(ids)] = ids
        return result
