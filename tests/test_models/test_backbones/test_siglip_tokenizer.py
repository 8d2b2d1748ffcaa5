"""SigLIPTokenizer: ids equal transformers' SiglipTokenizer; truncation."""
import logging
import random

import pytest
import torch
from transformers import SiglipTokenizer as HFSiglipTokenizer

from rsrefseg_mm.models.backbones.siglip import (SigLIPTokenizer,
                                                 canonicalize_text)

WORDS = ('the white storage tank left of the road large small red green blue '
         'airplane ship harbor vehicle bridge dam chimney stadium overpass '
         'windmill golf field train station basketball court tennis baseball '
         'expressway toll parking lot ground track above below near upper '
         'lower leftmost rightmost second third one two three of in on at by '
         'airport runway roundabout building roof tree pond river').split()
ODD = [
    'Übersee', 'café', 'naïve', '東京', 'ümlaut', '🚢', 'São', 'ﬁeld', 'Ｆｕｌｌ',
    'x²', '1,000', "don't", 'e-mail', 'U.S.A.', '(left)', '"quoted"', '\u2581',
    '</s>', '<unk>', '</S>', '<UNK>', '<s>', '...', '--', '#3', '@top', 'A&B',
    'tab\there', 'new\nline'
]


def _random_text(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 70])
    parts = []
    for _ in range(n):
        w = rng.choice(WORDS) if rng.random() < 0.85 else rng.choice(ODD)
        r = rng.random()
        if r < 0.1:
            w = w.upper()
        elif r < 0.2:
            w = w.capitalize()
        if rng.random() < 0.1:
            w += rng.choice(',.;:!?')
        parts.append(w)
    sep = rng.choice([' ', ' ', ' ', '  ', ' \t'])
    text = sep.join(parts)
    if rng.random() < 0.1:
        text = '  ' + text + ' '
    return text


@pytest.fixture(scope='module')
def texts():
    rng = random.Random(0)
    fixed = [
        '', ' ', 'a', 'A.', '</s>', 'the </s> ship', 'ship</s>', '<unk>road',
        ' \u2581left', 'LEFT   of\tthe road!!',
        'the white storage tank left of the road'
    ]
    return fixed + [_random_text(rng) for _ in range(1200)]


@pytest.fixture(scope='module')
def pair(siglip_spiece):
    ours = SigLIPTokenizer(siglip_spiece, context_length=64)
    hf = HFSiglipTokenizer(siglip_spiece, model_max_length=64)
    return ours, hf


def test_special_ids(pair):
    ours, hf = pair
    assert (ours.eos_id, ours.pad_id,
            ours.unk_id) == (hf.eos_token_id, hf.pad_token_id, hf.unk_token_id)


def test_ids_equal_transformers(pair, texts):
    ours, hf = pair
    ref = hf(
        texts,
        padding='max_length',
        truncation=True,
        max_length=64,
        return_tensors='pt')
    ids, mask = ours(texts)
    assert ids.shape == (len(texts), 64)
    bad = [
        i for i in range(len(texts))
        if not torch.equal(ids[i], ref['input_ids'][i])
    ]
    assert not bad, [(texts[i], ids[i].tolist(), ref['input_ids'][i].tolist())
                     for i in bad[:3]]
    assert torch.equal(mask, ref['attention_mask'].bool())
    n_long = sum(len(hf(t)['input_ids']) > 64 for t in texts)
    assert n_long > 50  # the corpus exercises truncation


def test_unpadded_encode_equals_transformers(pair, texts):
    ours, hf = pair
    for text in texts[:300]:
        assert ours.encode(text) == hf(text)['input_ids'], text


def test_truncation_warns_with_count(pair, monkeypatch):
    import rsrefseg_mm.models.backbones.siglip.siglip_tokenizer as mod
    logged = []
    monkeypatch.setattr(mod, 'print_log', lambda msg, **kw: logged.append(
        (msg, kw)))
    ours, hf = pair
    text = ' '.join(['storage tank'] * 60)
    n = len(ours.encode(text))
    assert n > 64
    ids, mask = ours([text, 'ship'])
    assert len(logged) == 1
    msg, kw = logged[0]
    assert f'{n - 64} dropped' in msg and kw['level'] == logging.WARNING
    assert mask[0].all() and ids[0, -1] == ours.eos_id
    assert mask[1].sum() == len(ours.encode('ship'))


def test_canonicalize():
    assert canonicalize_text('  The  "ship",\tleft!! ') == 'The ship left'


def test_missing_model_file_says_what_to_get(tmp_path):
    with pytest.raises(FileNotFoundError, match='spiece.model'):
        SigLIPTokenizer(str(tmp_path / 'spiece.model'))
    bad = tmp_path / 'bad.model'
    bad.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='not a SentencePiece model'):
        SigLIPTokenizer(str(bad))
