"""Train a small SentencePiece model in the layout of SigLIP 2's Gemma
tokenizer, for runs without the real ``tokenizer.model`` (tests and
benchmarks with random weights).

    python tools/misc/train_gemma_spiece.py work_dirs/gemma [--vocab-size 700]

Like Gemma's 256k model (the ``tokenizer.model`` of the
``google/siglip2-*`` Hugging Face folders): BPE with ``byte_fallback``
(every byte has a ``<0xXX>`` piece, so nothing is unknown),
``split_digits``, no dummy prefix, whitespace kept as it is
(``remove_extra_whitespaces=False``, identity normalisation, whitespace-only
pieces allowed); ids ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3; the
user-defined pieces ``<start_of_turn>`` and ``<end_of_turn>``. The corpus is
synthetic referring expressions, so the model is only good for exercising
the code path: tokens differ from Gemma's, and so do the features of any
real checkpoint.
"""
import argparse
import os
import os.path as osp
import random
import sys

CORPUS_WORDS = (
    'the white storage tank left of the road large small red green blue '
    'airplane ship harbor vehicle bridge dam chimney stadium overpass '
    'windmill golf field train station basketball court tennis baseball '
    'expressway toll parking lot ground track above below near upper lower '
    'leftmost rightmost second third one two three of in on at by airport '
    'runway roundabout building roof tree pond river square circle triangle '
    'yellow white black purple orange object largest smallest').split()
EXTRA_LINES = (
    'Übersee café naïve 東京 São ﬁeld 1,000 x² e-mail 2026 3.5 km',
    'The Ship LEFT of the Harbor, 12 m long; (near) "the" road!',
    'tab\tseparated  double  spaces   and\nnew lines',
)
USER_DEFINED = ('<start_of_turn>', '<end_of_turn>')


def train_gemma_spiece(out_dir: str,
                       vocab_size: int = 700,
                       seed: int = 0) -> str:
    """Train ``out_dir/tokenizer.model``; return its path."""
    import sentencepiece as spm
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        words = [rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.2:
            words[0] = words[0].capitalize()
        if rng.random() < 0.1:
            words.append(str(rng.randint(0, 999)))
        lines.append(' '.join(words))
    lines += list(EXTRA_LINES) * 5
    prefix = osp.join(out_dir, 'tokenizer')
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type='bpe',
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece='<pad>',
        eos_piece='<eos>',
        bos_piece='<bos>',
        unk_piece='<unk>',
        user_defined_symbols=list(USER_DEFINED),
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name='identity',
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2)
    os.remove(prefix + '.vocab')
    return prefix + '.model'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument('--vocab-size', type=int, default=700)
    args = parser.parse_args(argv)
    print(train_gemma_spiece(args.out_dir, args.vocab_size))
    return 0


if __name__ == '__main__':
    sys.exit(main())
