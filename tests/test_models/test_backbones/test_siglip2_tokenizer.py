"""SigLIP2Tokenizer: ids equal transformers' Gemma tokenizers as the SigLIP 2
folders configure them (fast and slow), lower-casing, truncation, padding."""
import logging
import random

import numpy as np
import pytest
import torch

from rsrefseg_core.tokenizers import GemmaSentencePiece
from rsrefseg_mm.models.backbones.siglip import SigLIP2Tokenizer
from siglip_helpers import hf_gemma_tokenizer, train_gemma_spiece

WORDS = ('the white storage tank left of the road large small red green blue '
         'airplane ship harbor vehicle bridge dam chimney stadium overpass '
         'windmill golf field train station basketball court tennis baseball '
         'expressway toll parking lot ground track above below near upper '
         'lower leftmost rightmost second third one two three of in on at by '
         'airport runway roundabout building roof tree pond river').split()
ODD = [
    'Übersee', 'café', 'naïve', '東京', 'ümlaut', '🚢', 'São', 'ﬁeld', 'Ｆｕｌｌ',
    'x²', '1,000', '2026', '3.5km', '#12', "don't", 'e-mail', 'U.S.A.',
    '(left)', '"quoted"', '\u2581', '\u2581\u2581', 'İstanbul', 'STRASSE', 'ß',
    '\u00a0', '\u3000', '<eos>', '<EOS>', '<pad>', '<bos>', '<unk>',
    '<start_of_turn>', '<end_of_turn>', '</s>', '<s>', '<0x41>', '...', '--',
    '@top', 'A&B', 'tab\there', 'new\nline', '\r\n'
]


def _random_text(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 70])
    parts = []
    for _ in range(n):
        w = rng.choice(WORDS) if rng.random() < 0.8 else rng.choice(ODD)
        r = rng.random()
        if r < 0.1:
            w = w.upper()
        elif r < 0.2:
            w = w.capitalize()
        if rng.random() < 0.1:
            w += rng.choice(',.;:!?')
        parts.append(w)
    text = rng.choice([' ', ' ', ' ', '  ', ' \t', '']).join(parts)
    if rng.random() < 0.1:
        text = rng.choice([' ', '  ', '\n']) + text + rng.choice([' ', ''])
    return text


@pytest.fixture(scope='module')
def gemma_model(tmp_path_factory) -> str:
    return train_gemma_spiece(str(tmp_path_factory.mktemp('gemma')))


@pytest.fixture(scope='module')
def texts():
    rng = random.Random(0)
    fixed = [
        '', ' ', 'a', 'A.', '<eos>', 'the <eos> ship', 'ship<eos>',
        '<unk>road', ' \u2581left', 'LEFT   of\tthe road!!', '12 ships',
        'the white storage tank left of the road', '  leading', 'trailing  ',
        ' '.join(['storage tank'] * 40)
    ]
    return fixed + [_random_text(rng) for _ in range(1200)]


@pytest.fixture(scope='module')
def hf_folder_tokenizer(gemma_model, tmp_path_factory):
    """GemmaTokenizerFast loaded from a saved folder with AutoTokenizer, as
    users load the google/siglip2-* tokenizers."""
    from transformers import AutoTokenizer
    folder = str(tmp_path_factory.mktemp('gemma-folder'))
    hf_gemma_tokenizer(gemma_model).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def _reference(hf, texts):
    return hf(
        texts,
        padding='max_length',
        truncation=True,
        max_length=64,
        return_tensors='pt')


def _assert_ids_equal(ids, mask, ref, texts):
    bad = [
        i for i in range(len(texts))
        if not torch.equal(ids[i], ref['input_ids'][i])
    ]
    assert not bad, [(texts[i], ids[i].tolist(), ref['input_ids'][i].tolist())
                     for i in bad[:3]]
    assert torch.equal(mask, ref['attention_mask'].bool())


def test_special_ids(gemma_model, hf_folder_tokenizer):
    ours = SigLIP2Tokenizer(gemma_model)
    hf = hf_folder_tokenizer
    assert type(hf).__name__ == 'GemmaTokenizerFast'
    assert (ours.pad_id, ours.eos_id, ours.bos_id, ours.unk_id) == (0, 1, 2, 3)
    assert (ours.pad_id, ours.eos_id, ours.bos_id,
            ours.unk_id) == (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id,
                             hf.unk_token_id)
    assert hf.padding_side == 'right'


def test_ids_equal_transformers_fast_lowercased(gemma_model,
                                                hf_folder_tokenizer, texts):
    """Default: the text lower-cased, then what the folder's tokenizer
    gives with the processor's padding='max_length', max_length=64."""
    ours = SigLIP2Tokenizer(gemma_model)
    ref = _reference(hf_folder_tokenizer, [t.lower() for t in texts])
    ids, mask = ours(texts)
    assert ids.shape == (len(texts), 64) and ids.dtype == torch.long
    _assert_ids_equal(ids, mask, ref, texts)
    n_long = int(ref['attention_mask'].all(1).sum())
    assert n_long > 50  # the corpus exercises truncation
    n_bytes = int(((ids >= 6) & (ids < 6 + 256)).any(1).sum())
    assert n_bytes > 50  # ... and the byte fallback


@pytest.mark.parametrize('fast', [True, False])
def test_ids_equal_transformers_cased(gemma_model, texts, fast):
    """lowercase=False: the text as it is, as the RSRefSeg 2 authors feed
    it; fast (tokenizer.json) and slow (SentencePiece) references."""
    ours = SigLIP2Tokenizer(gemma_model, lowercase=False)
    ref = _reference(hf_gemma_tokenizer(gemma_model, fast=fast), texts)
    ids, mask = ours(texts)
    _assert_ids_equal(ids, mask, ref, texts)
    assert not torch.equal(ids, SigLIP2Tokenizer(gemma_model)(texts)[0])


def test_unpadded_encode_equals_transformers(gemma_model, texts):
    ours = GemmaSentencePiece(gemma_model)
    hf = hf_gemma_tokenizer(gemma_model)
    for text in texts[:300]:
        assert ours.encode(text) == hf(text.lower())['input_ids'], text


def test_padding_keeps_rows_independent_of_the_batch(gemma_model):
    ours = GemmaSentencePiece(gemma_model)
    alone = ours.tokenize(['the ship'])[0]
    batch = ours.tokenize(['a', 'the ship',
                           ' '.join(['storage tank'] * 40)])[0]
    np.testing.assert_array_equal(alone[0], batch[1])
    assert alone.shape == (1, 64) and (alone[0, 3:] == ours.pad_id).all()


def test_truncation_keeps_eos_and_warns_with_count(gemma_model, monkeypatch):
    import rsrefseg_mm.models.backbones.siglip.siglip2_tokenizer as mod
    logged = []
    monkeypatch.setattr(mod, 'print_log', lambda msg, **kw: logged.append(
        (msg, kw)))
    ours = SigLIP2Tokenizer(gemma_model)
    text = ' '.join(['storage tank'] * 60)
    n = len(ours.encode(text))
    assert n > 64
    ids, mask = ours([text, 'ship'])
    assert len(logged) == 1
    msg, kw = logged[0]
    assert f'{n - 64} dropped' in msg and kw['level'] == logging.WARNING
    assert mask[0].all() and ids[0, -1] == ours.eos_id
    assert mask[1].sum() == len(ours.encode('ship'))


def test_clean_refuses_only_blank_text(gemma_model):
    ours = GemmaSentencePiece(gemma_model)
    assert ours.clean(' \t\n') == '' and ours.clean('') == ''
    assert ours.clean('?!') == '?!'  # no punctuation removal (unlike SigLIP)
    assert ours.clean(' The Ship') == ' the ship'
    assert GemmaSentencePiece(
        gemma_model, lowercase=False).clean('The Ship') == 'The Ship'


def test_wrong_or_missing_model_file_says_what_to_get(tmp_path, siglip_spiece):
    with pytest.raises(FileNotFoundError, match='tokenizer.model'):
        SigLIP2Tokenizer(str(tmp_path / 'tokenizer.model'))
    bad = tmp_path / 'bad.model'
    bad.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='not a SentencePiece model'):
        SigLIP2Tokenizer(str(bad))
    with pytest.raises(ValueError, match="no '<eos>' piece.*spiece.model"):
        SigLIP2Tokenizer(siglip_spiece)
