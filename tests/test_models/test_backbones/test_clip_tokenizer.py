"""CLIPTokenizer must give exactly open_clip's ids (open_clip: test-only)."""
import itertools
import random

import open_clip.tokenizer as open_clip_tokenizer  # test requirement
import pytest
import torch

from rsrefseg_mm.models.backbones.clip.clip_tokenizer import (DEFAULT_BPE_PATH,
                                                              CLIPTokenizer)

COLORS = ['white', 'red', 'dark blue', 'grey', 'light-green', 'Orange']
OBJECTS = [
    'airplane', 'vehicle', 'storage tank', 'baseball field', 'ship',
    'tennis court', 'ground track field', 'harbor', 'bridge', 'windmill',
    'overpass', 'golf field', 'expressway toll station', 'dam', 'chimney',
    'train station', 'stadium', 'airport', 'basketball court',
    'expressway service area'
]
PLACES = [
    'on the left', 'at the top right', 'in the middle of the image',
    'near the bottom edge', 'next to the large building', 'between two roads',
    'closest to the river', ''
]
TEMPLATES = [
    'the {c} {o} {p}', 'A {o} {p}', '{c} {o}', 'the {o} that is {p}',
    "the {o}'s shadow {p}", 'THE {C} {O} {P}!!', '{o} #{n}, {p}.',
    'the {n}th {o} from the left ({c})'
]
SPECIAL = [
    'caf\u00e9 near the r\u00e9sum\u00e9 building',
    'cafÃ© mojibake gets fixed by ftfy',
    'the ship &amp; the harbor',
    'a &lt;large&gt; airplane',
    '&quot;white&quot; car',
    'it&#39;s the bridge',
    'double &amp;amp; escaped',
    'non&nbsp;breaking&nbsp;space',
    '\u98de\u673a \u5728 \u5de6\u8fb9',
    '\u0441\u0430\u043c\u043e\u043b\u0435\u0442 '
    '\u0441\u043b\u0435\u0432\u0430',
    'emoji \U0001F6EB plane \U0001F30D',
    'tabs\tand\nnew\r\nlines   here',
    "don't won't it's they're we've i'm you'll he'd",
    '1234567890 3.14 1st 2nd 3rd',
    '!!!???...,,,;;;',
    'x' * 300,
    'Zero\u200bwidth\u200bjoin',
    'ﬁnancial ligature ﬂ',
    'ＦＵＬＬ ｗｉｄｔｈ',
    ' '.join(['the long expression'] * 40),
    'a',
    'straße groß ÄÖÜ äöü',
    'naïve coöperate',
    'µm ångström ℃ ²³',
    '<start_of_text> literal special <end_of_text>',
    # ftfy leaves HTML alone when '<' or '>' is present: tests the two
    # explicit html.unescape passes
    '<b>bold</b> &amp;amp; double-escaped',
    '<i> &amp;lt;tank&amp;gt; &#x27;',
]


def make_texts(n: int = 1100):
    """Combinatorial RRSIS-D-like expressions plus odd strings."""
    rng = random.Random(0)
    combos = list(itertools.product(TEMPLATES, COLORS, OBJECTS, PLACES))
    rng.shuffle(combos)
    texts = []
    for t, c, o, p in combos[:n]:
        texts.append(
            t.format(
                c=c,
                o=o,
                p=p,
                C=c.upper(),
                O=o.upper(),
                P=p.upper(),
                n=rng.randint(1, 99)))
    # random unicode / punctuation soup
    alphabet = ('abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?\'"-()'
                '&<>#@ éèüñçø 中文字 日本語 한국어 ÅΩπ ✈️🚢 \t\n')
    for _ in range(100):
        texts.append(''.join(
            rng.choice(alphabet) for _ in range(rng.randint(1, 120))))
    # very long expressions (>> 77 tokens)
    for i in range(20):
        texts.append(' '.join(rng.choice(OBJECTS) for _ in range(40 + i)))
    return texts + SPECIAL


@pytest.fixture(scope='module')
def tokenizers():
    return CLIPTokenizer(), open_clip_tokenizer.SimpleTokenizer()


def test_ids_equal_open_clip(tokenizers):
    ours, ref = tokenizers
    texts = make_texts()
    assert len(texts) >= 1000
    got = ours(texts)
    want = open_clip_tokenizer.tokenize(texts)
    assert got.shape == want.shape == (len(texts), 77)
    bad = [t for t, g, w in zip(texts, got, want) if not torch.equal(g, w)]
    assert not bad, f'{len(bad)} texts differ, e.g. {bad[:3]}'
    for t in texts[::37]:
        assert ours.encode(t) == ref.encode(t), t


def test_other_context_length(tokenizers):
    ours, ref = tokenizers
    texts = make_texts(50)
    assert torch.equal(ours(texts, context_length=16), ref(texts, 16))


def test_truncation_keeps_eot(tokenizers):
    ours, _ = tokenizers
    ids = ours('airplane ' * 200)[0]
    assert ids[0] == ours.sot_token_id == 49406
    assert ids[-1] == ours.eot_token_id == 49407
    assert (ids[1:-1] == ours.encode('airplane')[0]).all()


def test_short_text_layout_and_decode(tokenizers):
    ours, _ = tokenizers
    ids = ours(['The  WHITE car &amp; the bridge'])[0]
    n = int((ids != 0).sum())
    assert ids[n - 1] == ours.eot_token_id and (ids[n:] == 0).all()
    assert ours.decode(ids[1:n - 1].tolist()).strip() == \
        'the white car & the bridge'


def test_vocab_is_mmsegs():
    # the merge list MMSegmentation ships, the same file open_clip ships
    assert DEFAULT_BPE_PATH.endswith(
        'mmseg/utils/bpe_simple_vocab_16e6.txt.gz')
    with open(DEFAULT_BPE_PATH,
              'rb') as a, open(open_clip_tokenizer.default_bpe(), 'rb') as b:
        assert a.read() == b.read()
    tok = CLIPTokenizer()
    assert tok.vocab_size == 49408


def test_bad_inputs():
    with pytest.raises(FileNotFoundError, match='bpe_simple_vocab'):
        CLIPTokenizer(bpe_path='/nonexistent/bpe.txt.gz')
    with pytest.raises(TypeError, match='text 1'):
        CLIPTokenizer()(['ok', None])


def test_long_words_equal_open_clip(tokenizers):
    # the merge loop is rewritten for long words (a heap instead of CLIP's
    # quadratic rescans); the ids must stay open_clip's
    ours, ref = tokenizers
    rng = random.Random(1)
    words = ['ab' * 700, 'a' * 1500, 'storagetank' * 90]
    words += [
        ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(n))
        for n in (300, 1200, 2000)
    ]
    words += [''.join(rng.choice('aeinrst') for _ in range(1000))]
    for word in words:
        assert ours.encode(word) == ref.encode(word), word[:40]


def test_word_cache_is_bounded():
    tok = CLIPTokenizer()
    size = tok.cache_size
    for i in range(size + 50):
        tok.encode(f'word{i}x')
    assert len(tok.cache) <= size
    # what was evicted is recomputed to the same ids
    assert tok.encode('word0x') == CLIPTokenizer().encode('word0x')
