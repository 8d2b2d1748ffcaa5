"""SigLIP's SentencePiece tokenizer, without transformers or torch.

Reproduces transformers' ``SiglipTokenizer`` (the tokenizer of the
``google/siglip-*`` Hugging Face folders, which ship ``spiece.model``) id for
id, then truncates and pads the way SigLIP was trained:

1. lower-case (``do_lower_case=True``);
2. split off the special tokens ``</s>`` and ``<unk>`` written literally in
   the text (whitespace around them is dropped);
3. canonicalise each piece of text: remove ASCII punctuation
   (``string.punctuation``), collapse whitespace runs to one space, strip;
4. encode with SentencePiece, the model's ``add_dummy_prefix`` switched off
   and a ``'▁'`` put in front of the text instead (transformers encodes
   ``'<unk>' + text`` and drops the pieces of ``'<unk>'`` so that the first
   word keeps its word-start piece);
5. append ``</s>`` (EOS, "sticky": kept when truncating), truncate to
   ``context_length`` (64) and pad with the pad id (``</s>``, id 1 in the
   public models) to exactly ``context_length``.

Padding to the fixed length matters: the sentence feature is read at the last
position, so padding only to the longest expression of the batch (what
transformers does with ``padding=True``, and what the RSRefSeg authors' code
does) makes an expression's feature depend on the other expressions of its
batch. Truncation is logged with the number of tokens dropped.

It imports neither torch nor OpenMMLab, so that the ONNX Runtime predictor
runs without them; ``rsrefseg_mm``'s ``SigLIPTokenizer`` wraps it.
"""
import re
import string
from typing import List, Sequence, Tuple

import numpy as np

from .padding import pad_to_context

SPIECE_UNDERLINE = '\u2581'
_PUNCT_TABLE = str.maketrans('', '', string.punctuation)


def canonicalize_text(text: str) -> str:
    """SigLIP's text canonicalisation: no ASCII punctuation, single spaces.

    Args:
        text (str): Raw text.

    Returns:
        str: Canonical text.
    """
    return re.sub(r'\s+', ' ', text.translate(_PUNCT_TABLE)).strip()


def _load_processor(path: str):
    """SentencePiece processor with ``add_dummy_prefix`` switched off."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    try:
        with open(path, 'rb') as f:
            proto = model_pb2.ModelProto.FromString(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(
            f'SigLIP tokenizer model {path!r} not found. It is the '
            '`spiece.model` file of the Hugging Face folder '
            '(e.g. google/siglip-so400m-patch14-384/spiece.model); put it '
            'beside the weights (checkpoints/siglip-so400m-patch14-384/) and '
            "set the backbone's `tokenizer` (or `checkpoint` folder)") \
            from None
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f'{path} is not a SentencePiece model: {e}') from e
    proto.normalizer_spec.add_dummy_prefix = False
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto.SerializeToString())
    return processor


class SigLIPSentencePiece:
    """Tokenize expressions for SigLIP's text tower (NumPy ids).

    Args:
        model_file (str): ``spiece.model`` of the SigLIP model.
        context_length (int): Sequence length after truncation and padding
            (64, SigLIP's training length and its number of positions).
        eos_token (str): End-of-sequence piece (``</s>``).
        pad_token (str): Padding piece (``</s>`` in the public models).
        unk_token (str): Unknown piece (``<unk>``).
    """

    def __init__(self,
                 model_file: str,
                 context_length: int = 64,
                 eos_token: str = '</s>',
                 pad_token: str = '</s>',
                 unk_token: str = '<unk>') -> None:
        self.model_file = model_file
        self.context_length = context_length
        self.sp = _load_processor(model_file)
        self.eos_token, self.unk_token = eos_token, unk_token
        self.eos_id = self._special_id(eos_token)
        self.pad_id = self._special_id(pad_token)
        self.unk_id = self._special_id(unk_token)
        self._unk_length = len(self.sp.encode(unk_token, out_type=str))
        specials = sorted({eos_token, pad_token, unk_token},
                          key=len,
                          reverse=True)
        self._special_re = re.compile('(' +
                                      '|'.join(re.escape(s)
                                               for s in specials) + ')')

    def _special_id(self, piece: str) -> int:
        idx = self.sp.piece_to_id(piece)
        if self.sp.id_to_piece(idx) != piece:
            raise ValueError(f'{self.model_file}: the SentencePiece model has '
                             f'no {piece!r} piece; is this a SigLIP '
                             'spiece.model?')
        return idx

    @property
    def vocab_size(self) -> int:
        """Number of pieces of the SentencePiece model."""
        return self.sp.get_piece_size()

    def clean(self, text: str) -> str:
        """Text as the model sees it (lower-cased, canonical); '' if empty."""
        return canonicalize_text(text.lower())

    def _encode_piece(self, text: str) -> List[str]:
        text = canonicalize_text(text)
        pieces = self.sp.encode(self.unk_token + text, out_type=str)
        return pieces[self._unk_length:] \
            if len(pieces) >= self._unk_length else pieces

    def encode(self, text: str) -> List[int]:
        """Ids of one text with EOS appended, not truncated or padded.

        Args:
            text (str): Raw text.

        Returns:
            list[int]: SentencePiece ids ending with ``eos_id``.
        """
        text = (SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, ' ')).lower()
        chunks = self._special_re.split(text)
        # odd indices are special tokens; they strip whitespace on both sides
        for i in range(1, len(chunks), 2):
            chunks[i - 1] = chunks[i - 1].rstrip()
            chunks[i + 1] = chunks[i + 1].lstrip()
        pieces: List[str] = []
        for i, chunk in enumerate(chunks):
            if i % 2:
                pieces.append(chunk)
            elif chunk:
                pieces.extend(self._encode_piece(chunk))
        if len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and \
                pieces[1] in (self.eos_token, self.unk_token):
            pieces = pieces[1:]
        ids = [self.sp.piece_to_id(p) for p in pieces]
        if not ids or ids[-1] != self.eos_id:
            ids.append(self.eos_id)
        return ids

    def tokenize(
        self, texts: Sequence[str]
    ) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int]]]:
        """Tokenize a batch to fixed-length ids.

        Args:
            texts (Sequence[str]): B expressions.

        Returns:
            tuple: ids (B, context_length) int64, padded with ``pad_id``; the
            mask (B, context_length) bool, True on the expression's tokens
            and its EOS (the pad id equals the EOS id, so the mask cannot be
            derived from the ids); and ``(index, tokens)`` of every
            expression that was truncated (its token count, EOS included).
        """
        return pad_to_context([self.encode(t) for t in texts],
                              self.context_length, self.pad_id, self.eos_id)
