"""Train a small SentencePiece model in SigLIP's id layout, for runs without
the real ``spiece.model`` (benchmarks and tests with random weights).

    python tools/misc/train_spiece.py work_dirs/spiece [--vocab-size 100]

Ids: ``<pad>`` 0, ``</s>`` 1 (EOS and padding), ``<unk>`` 2, as in the public
SigLIP models. The corpus is synthetic referring expressions, so the model
is only good for exercising the code path: tokens differ from SigLIP's, and
so do the features of any real checkpoint.
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


def train_spiece(out_dir: str, vocab_size: int = 100, seed: int = 0) -> str:
    """Train ``out_dir/spiece.model``; return its path."""
    import sentencepiece as spm
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed)
    lines = [
        ' '.join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 12)))
        for _ in range(3000)
    ]
    lines += ['Übersee café naïve 東京 São ﬁeld 1,000 x² e-mail'] * 5
    prefix = osp.join(out_dir, 'spiece')
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type='unigram',
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        normalization_rule_name='nmt_nfkc',
        minloglevel=2)
    return prefix + '.model'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument('--vocab-size', type=int, default=100)
    args = parser.parse_args(argv)
    print(train_spiece(args.out_dir, args.vocab_size))
    return 0


if __name__ == '__main__':
    sys.exit(main())
