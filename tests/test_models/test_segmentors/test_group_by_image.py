"""``test_cfg.group_by_image``: each distinct image is encoded once on a
dataset with three expressions per image, and the metrics equal the plain
run exactly; the cache (the predictors' ``LRUCache``, keyed by a content
digest) keeps copies of the embeddings, never the input batch."""
import copy
import gc
import weakref

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner

from rsrefseg_mm.apis import (build_test_pipeline, init_referring_model,
                              load_referring_image)
from rsrefseg_mm.apis.pipeline import prepare_inputs
from helpers import TINY_CONFIG

PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]
TEXTS = ['the red circle', 'a blue square', 'the object at the top']


def write_refsegrs(root, num_images=4):
    """RefSegRS layout: images/<id>.tif, masks/<id>.tif and
    output_phrase_test.txt with three lines (expressions) per image."""
    (root / 'images').mkdir(parents=True)
    (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for k in range(num_images):
        name = str(100 + k)
        img = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        mask = np.zeros((64, 80), np.uint8)
        mask[8 + 4 * k:40, 10:50 - 5 * k] = 255
        cv2.imwrite(str(root / 'images' / f'{name}.tif'), img)
        cv2.imwrite(str(root / 'masks' / f'{name}.tif'), mask)
        lines += [f'{name} {text}' for text in TEXTS]
    (root / 'output_phrase_test.txt').write_text('\n'.join(lines) + '\n')
    return len(lines)


def run_test(tmp_path, data_root, group_by_image):
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(
        dict(
            work_dir=str(tmp_path / f'work_{group_by_image}'),
            test_dataloader=dict(
                dataset=dict(
                    _delete_=True,
                    type='RefSegRSDataset',
                    data_root=str(data_root),
                    split='test',
                    test_mode=True,
                    pipeline=PIPELINE)),
            default_hooks=dict(visualization=dict(draw=False))))
    cfg.model.test_cfg = dict(mode='whole', group_by_image=group_by_image)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    torch.manual_seed(0)
    with torch.no_grad():  # random weights with non-trivial masks
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + p)
    sam_encodings = []
    encode = model.decode_head.encode_image

    def counting(images):
        sam_encodings.append(images.shape[0])
        return encode(images)

    model.decode_head.encode_image = counting
    state = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = runner.test()
    return metrics, sum(sam_encodings), state


def test_group_by_image_encodes_once_and_scores_the_same(tmp_path):
    data_root = tmp_path / 'refsegrs'
    num_samples = write_refsegrs(data_root)
    plain, plain_enc, plain_state = run_test(tmp_path, data_root, False)
    grouped, grouped_enc, grouped_state = run_test(tmp_path, data_root, True)
    for k, v in plain_state.items():  # the same weights in both runs
        assert torch.equal(v, grouped_state[k]), k
    assert plain_enc == num_samples == 12
    assert grouped_enc == num_samples // len(TEXTS) == 4
    assert plain == grouped
    assert 0 < plain['refer/mIoU'] < 100


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = init_referring_model(TINY_CONFIG, None, device='cpu')
    with torch.no_grad():  # random weights with non-trivial masks
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def batch(model, imgs, texts):
    """Preprocessed (inputs, data_samples) of (image, expression) pairs."""
    pipeline = build_test_pipeline(model.cfg)
    data = model.data_preprocessor(
        pseudo_collate([
            prepare_inputs(load_referring_image(img), text, pipeline)
            for img, text in zip(imgs, texts)
        ]), False)
    return data['inputs'], data['data_samples']


def own_storage(t):
    """Whether ``t`` is a whole tensor of its own (not a view)."""
    return t._base is None and \
        t.untyped_storage().nbytes() == t.numel() * t.element_size()


@torch.no_grad()
def test_group_by_image_cache_keeps_no_input(model):
    rng = np.random.default_rng(3)
    a, b, c = (
        rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(3))
    calls = [([a, b, a, a], TEXTS + ['the left one']), ([b, c], TEXTS[:2]),
             ([a.copy()], TEXTS[:1])]
    model.test_cfg.group_by_image = False
    plain = [model.predict(*batch(model, *call)) for call in calls]

    model.test_cfg.group_by_image = True
    model.image_encodings = 0
    sam_encodings = []
    encode = model.decode_head.encode_image
    model.decode_head.encode_image = \
        lambda x: sam_encodings.append(x.shape[0]) or encode(x)
    try:
        inputs, samples = batch(model, *calls[0])
        input_ptr = inputs.untyped_storage().data_ptr()
        ref = weakref.ref(inputs)
        grouped = [model.predict(inputs, samples)]
        # a repeat within the batch is encoded once too
        assert model.image_encodings == 2 and sum(sam_encodings) == 2
        cache = model.image_cache
        assert len(cache) == 2
        assert all(isinstance(key, str) for key in cache)
        for row in cache.values():
            for t in row.values():
                assert t.shape[0] == 1 and own_storage(t)
                assert t.untyped_storage().data_ptr() != input_ptr
        del inputs, samples
        gc.collect()
        assert ref() is None  # the cache does not keep the batch alive
        grouped += [model.predict(*batch(model, *call)) for call in calls[1:]]
        assert model.image_encodings == 3 and sum(sam_encodings) == 3
    finally:
        model.decode_head.encode_image = encode
    for want, got in zip(plain, grouped):
        for w, g in zip(want, got):
            assert g.text == w.text
            assert torch.allclose(
                g.seg_logits.data, w.seg_logits.data, atol=1e-6)
            assert torch.equal(g.pred_sem_seg.data, w.pred_sem_seg.data)

    # the cache follows the LRU size and is dropped when weights may change
    model.test_cfg.image_cache_size = 1
    assert model.image_cache.size == 1 and len(model.image_cache) == 0
    model.predict(*batch(model, [a, b], TEXTS[:2]))
    assert len(model.image_cache) == 1 and model.image_encodings == 5
    copied = copy.deepcopy(model)  # a model with a cache still copies
    assert len(copied.image_cache) == 1
    model.train()
    assert '_image_cache' not in model.__dict__
    model.eval()
    model.predict(*batch(model, [b], TEXTS[:1]))
    assert model.image_encodings == 6 and len(model.image_cache) == 1
    model.load_state_dict(model.state_dict())
    assert '_image_cache' not in model.__dict__
    model.test_cfg.group_by_image = False
    del model.test_cfg['image_cache_size']
