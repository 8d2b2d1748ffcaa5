"""A model with a presence output (the generalized-referring demo config):
the predictor reports the probability per expression, an expression below
the threshold gets an empty mask, and the one-pass path agrees."""
import numpy as np
import pytest
import torch

from rsrefseg_mm.apis import ReferringPredictor, inference_referring
from helpers import GRES_CONFIG, perturbed_model, spread_presence

TEXTS = [
    f'the {c} {s}' for c in ('red', 'blue', 'green', 'white')
    for s in ('circle', 'square')
]


@pytest.fixture(scope='module')
def model():
    model = perturbed_model(GRES_CONFIG)
    return model


def test_presence_reported_and_gates_the_mask(model):
    image = np.random.default_rng(0).integers(0, 255, (96, 120, 3), np.uint8)
    spread_presence(model, image, TEXTS)
    predictor = ReferringPredictor(model)
    predictor.set_image(image)
    results = predictor.predict(TEXTS)
    threshold = model.decode_head.presence_cfg['threshold']
    probs = [r.metainfo['presence'] for r in results]
    assert all(0.0 <= p <= 1.0 for p in probs)
    # random weights: some expressions on each side of the threshold
    assert min(probs) < threshold < max(probs)
    # none sits on the threshold, where rounding could flip the answer
    assert min(abs(p - threshold) for p in probs) > 1e-3, probs
    for text, r, p in zip(TEXTS, results, probs):
        mask = r.pred_sem_seg.data[0]
        assert mask.shape == (96, 120)
        if p < threshold:
            assert mask.sum() == 0 and r.seg_logits.data.max() == 0
        # the one-pass path gives the same answer
        one = inference_referring(model, image, text)
        assert torch.equal(one.pred_sem_seg.data, r.pred_sem_seg.data), text
