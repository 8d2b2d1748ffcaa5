"""SigLIP 2's Gemma SentencePiece tokenizer, without transformers or torch.

The fixed-resolution SigLIP 2 models (``google/siglip2-*-patch16-512`` and
the other Hugging Face folders with ``model_type`` ``"siglip"``) read text
with Gemma's tokenizer (``tokenizer.model``: BPE, 256,000 pieces, byte
fallback, digits split, no dummy prefix, whitespace kept; ``<pad>`` 0,
``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3). This class reproduces transformers'
``GemmaTokenizer`` / ``GemmaTokenizerFast`` as the SigLIP 2 folders and
processor configure them, id for id:

1. lower-case (``lowercase=True``): SigLIP 2 was trained on lower-cased
   text (its model card asks for it); the Gemma tokenizer itself keeps case,
   so transformers' processor leaves that to the user. ``lowercase=False``
   feeds the text as it is (what the RSRefSeg 2 authors do);
2. split off the special tokens ``<pad>``, ``<eos>``, ``<bos>``, ``<unk>``
   written literally in the text (whitespace around them is kept);
3. encode every other piece of text with the SentencePiece model as it is
   (no canonicalisation, no whitespace stripping: ``' ship'`` and ``'ship'``
   differ, as in transformers);
4. no BOS (``add_bos_token=False``), append ``<eos>`` (``add_eos_token=True``;
   "sticky": kept when truncating), truncate to ``context_length`` (64) and
   pad on the right with ``<pad>`` (id 0) to exactly ``context_length``
   (``padding='max_length', max_length=64``, the processor's defaults).

Padding to the fixed length matters as for SigLIP: the text tower reads its
sentence feature at the last position, so padding only to the longest
expression of the batch (``padding=True``, what the RSRefSeg 2 authors do,
with an attention mask) makes an expression's features depend on the other
expressions of its batch.

It imports neither torch nor OpenMMLab, so that the ONNX Runtime predictor
can run without them; ``rsrefseg_mm``'s ``SigLIP2Tokenizer`` wraps it.
"""
import re
from typing import List, Sequence, Tuple

import numpy as np

from .padding import pad_to_context


def _load_processor(path: str):
    """SentencePiece processor of ``path`` (with messages that say what to
    get)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    try:
        with open(path, 'rb') as f:
            proto = model_pb2.ModelProto.FromString(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(
            f'SigLIP 2 tokenizer model {path!r} not found. It is the '
            '`tokenizer.model` file (Gemma SentencePiece) of the Hugging Face '
            'folder (e.g. google/siglip2-so400m-patch16-512/tokenizer.model); '
            'put it beside the weights (checkpoints/siglip2-so400m-patch16-'
            "512/) and set the backbone's `tokenizer` (or `checkpoint` "
            'folder)') from None
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f'{path} is not a SentencePiece model: {e}') from e
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto.SerializeToString())
    return processor


class GemmaSentencePiece:
    """Tokenize expressions for SigLIP 2's text tower (NumPy ids).

    Args:
        model_file (str): ``tokenizer.model`` of the SigLIP 2 model.
        context_length (int): Sequence length after truncation and padding
            (64, SigLIP 2's training length and its number of positions).
        lowercase (bool): Lower-case the text first (SigLIP 2's training
            text). Defaults to True.
        eos_token (str): End-of-sequence piece (``<eos>``), appended.
        pad_token (str): Padding piece (``<pad>``).
        bos_token (str): Beginning-of-sequence piece (``<bos>``); not added,
            only split off when written in the text.
        unk_token (str): Unknown piece (``<unk>``).
    """

    def __init__(self,
                 model_file: str,
                 context_length: int = 64,
                 lowercase: bool = True,
                 eos_token: str = '<eos>',
                 pad_token: str = '<pad>',
                 bos_token: str = '<bos>',
                 unk_token: str = '<unk>') -> None:
        self.model_file = model_file
        self.context_length = context_length
        self.lowercase = lowercase
        self.sp = _load_processor(model_file)
        self.eos_token, self.pad_token = eos_token, pad_token
        self.bos_token, self.unk_token = bos_token, unk_token
        self.eos_id = self._special_id(eos_token)
        self.pad_id = self._special_id(pad_token)
        self.bos_id = self._special_id(bos_token)
        self.unk_id = self._special_id(unk_token)
        specials = sorted({eos_token, pad_token, bos_token, unk_token},
                          key=len,
                          reverse=True)
        self._special_re = re.compile('(' +
                                      '|'.join(re.escape(s)
                                               for s in specials) + ')')

    def _special_id(self, piece: str) -> int:
        idx = self.sp.piece_to_id(piece)
        if self.sp.id_to_piece(idx) != piece:
            raise ValueError(f'{self.model_file}: the SentencePiece model has '
                             f'no {piece!r} piece; is this the Gemma '
                             'tokenizer.model of a SigLIP 2 folder (a SigLIP '
                             'spiece.model has </s>, not <eos>)?')
        return idx

    @property
    def vocab_size(self) -> int:
        """Number of pieces of the SentencePiece model."""
        return self.sp.get_piece_size()

    def clean(self, text: str) -> str:
        """Text as the model sees it (lower-cased unless ``lowercase`` is
        off); '' if it is empty or whitespace only."""
        if not text.strip():
            return ''
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> List[int]:
        """Ids of one text with EOS appended, not truncated or padded.

        Args:
            text (str): Raw text.

        Returns:
            list[int]: SentencePiece ids ending with ``eos_id``.
        """
        if self.lowercase:
            text = text.lower()
        ids: List[int] = []
        # odd indices are special tokens, even ones the text between them
        for i, chunk in enumerate(self._special_re.split(text)):
            if i % 2:
                ids.append(self.sp.piece_to_id(chunk))
            elif chunk:
                ids.extend(self.sp.encode(chunk))
        ids.append(self.eos_id)
        return ids

    def tokenize(
        self, texts: Sequence[str]
    ) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int]]]:
        """Tokenize a batch to fixed-length ids.

        Args:
            texts (Sequence[str]): B expressions.

        Returns:
            tuple: ids (B, context_length) int64, padded with ``pad_id`` on
            the right; the mask (B, context_length) bool, True on the
            expression's tokens and its EOS (transformers'
            ``attention_mask``); and ``(index, tokens)`` of every expression
            that was truncated (its token count, EOS included).
        """
        return pad_to_context([self.encode(t) for t in texts],
                              self.context_length, self.pad_id, self.eos_id)
