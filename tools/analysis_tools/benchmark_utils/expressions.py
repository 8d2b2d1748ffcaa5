"""``benchmark.py --expressions-per-image K``: one image, K expressions,
answered by :class:`~rsrefseg_mm.apis.ReferringPredictor` (image encoded
once) next to K independent one-pass forwards (``model.predict``)."""
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dataset import pseudo_collate

from rsrefseg_mm.utils import track
from .measure import amp_context, summarize, synchronize
from .model import TEXTS


def expressions(k: int) -> List[str]:
    """K distinct expressions (the benchmark's texts, numbered)."""
    return [f'{TEXTS[i % len(TEXTS)]} number {i}' for i in range(k)]


def _timed(device: str, fn) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def benchmark_expressions(model,
                          size: tuple,
                          k: int,
                          device: str,
                          amp: bool,
                          warmup: int,
                          repeats: int,
                          force: Optional[bool] = None) -> Dict[str, dict]:
    """Latency of the first and a follow-up expression, and of K
    expressions, through the predictor vs K one-pass forwards.

    The four measurements are interleaved within every repeat, on the same
    (H, W, 3) uint8 image, so the machine's drift hits them alike.

    Args:
        model (nn.Module): An ``RSRefSeg`` with ``cfg`` (its test
            pipeline builds the inputs, as in the inference API).
        size (tuple): (H, W) of the image.
        k (int): Expressions per image.
        device (str): Device of the model.
        amp (bool): bf16 autocast.
        warmup (int): Untimed rounds first.
        repeats (int): Timed rounds.
        force (bool, optional): Progress bars on / off / auto (None).

    Returns:
        dict: Per measurement the :func:`summarize` of its seconds:
        ``first`` (set_image + one expression), ``follow_up`` (one more
        expression), ``predictor_k`` (set_image + K expressions) and
        ``forwards_k`` (K one-pass forwards).
    """
    from rsrefseg_mm.apis import ReferringPredictor, build_test_pipeline
    from rsrefseg_mm.apis.pipeline import load_referring_image, prepare_inputs
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    texts = expressions(k)
    predictor = ReferringPredictor(model, max_batch=max(k, 1))
    pipeline = build_test_pipeline(model.cfg)
    raster = load_referring_image(image)

    def one_pass(text):
        data = model.data_preprocessor(
            pseudo_collate([prepare_inputs(raster, text, pipeline)]), False)
        return model.predict(data['inputs'], data['data_samples'])

    times: Dict[str, List[float]] = {
        'first': [],
        'follow_up': [],
        'predictor_k': [],
        'forwards_k': []
    }
    rounds = list(range(warmup + repeats))
    with torch.no_grad(), amp_context(device, amp):
        for r in track(rounds, f'{k} expressions / image', force=force):
            predictor.reset_image()
            first = _timed(
                device, lambda:
                (predictor.set_image(image), predictor.predict(texts[0])))
            follow = _timed(device, lambda: predictor.predict(texts[-1]))
            predictor.reset_image()
            batch = _timed(
                device, lambda:
                (predictor.set_image(image), predictor.predict(texts)))
            forwards = _timed(device, lambda: [one_pass(t) for t in texts])
            if r >= warmup:
                for key, value in zip(times, (first, follow, batch, forwards)):
                    times[key].append(value)
    return {key: summarize(values) for key, values in times.items()}


def print_expressions(res: Dict[str, dict], config: str, k: int,
                      env: str) -> None:
    """The markdown table of :func:`benchmark_expressions`."""
    med = {key: value['median'] for key, value in res.items()}
    print(f'\n### {k} expressions on one image: {config}\n\n{env}\n')
    print('| measurement | median s | p90 s |\n| --- | --- | --- |')
    names = dict(
        first='first query (encode image + 1 expression)',
        follow_up='follow-up query (1 expression, image cached)',
        predictor_k=f'{k} expressions, predictor (1 encode)',
        forwards_k=f'{k} expressions, {k} one-pass forwards')
    for key, name in names.items():
        print(f'| {name} | {med[key]:.3f} | {res[key]["p90"]:.3f} |')
    print(f'\nfollow-up / first: {med["follow_up"] / med["first"]:.4f} '
          f'(1/{med["first"] / med["follow_up"]:.1f}); {k} forwards / '
          f'predictor: {med["forwards_k"] / med["predictor_k"]:.2f}x')
