"""Helpers shared by the test modules (``pytest.ini`` puts ``tests/`` on
``sys.path``: ``from helpers import ...``)."""
import http.server
import importlib.util
import os
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from rasterio.transform import Affine, from_origin

#: Repository root.
REPO = Path(__file__).resolve().parents[1]
#: The tiny demo config (its schedule part of the name may change).
TINY_CONFIG = str(
    sorted((REPO / 'configs' / 'rsrefseg').glob('rsrefseg-tiny_*.py'))[0])
#: The generalized-referring tiny config (a presence output).
GRES_CONFIG = str(
    sorted((REPO / 'configs' / 'rsrefseg').glob('rsrefseg-tiny-gres_*.py'))[0])
#: Small and fast ``--cfg-options`` of the tiny demo config (tool runs).
FAST = [
    'train_dataloader.batch_size=4',
    'train_dataloader.dataset.num_samples=64',
    'test_dataloader.dataset.num_samples=12',
    'val_dataloader.dataset.num_samples=12',
    'train_cfg.val_interval=1000',
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.save_best=None',
    'randomness.deterministic=True',
]
#: A 2-block SAM (``sam_arch`` dict): 128 px input, 8x8 embedding, dim 32.
TINY_SAM = dict(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1, ),
    encoder_window_size=4,
    image_size=128,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32)


def free_port() -> int:
    """A TCP port that is free now (for torchrun / process groups)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_ok(args: List[str],
           env: Optional[dict] = None,
           cwd: Path = REPO,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command (a tool of the repository) that must succeed.

    Returns:
        CompletedProcess: With text ``stdout`` / ``stderr``; a non-zero exit
        fails the test with the end of both.
    """
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


class RunsACommand:
    """Unpickling this object runs ``touch <marker>`` through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def crafted_checkpoint(
        folder: Path,
        state_dict: Optional[Dict[str,
                                  torch.Tensor]] = None) -> Tuple[str, Path]:
    """A ``.pth`` whose pickle would run a command when fully unpickled.

    Args:
        folder (Path): Where the file (``crafted.pth``) and the marker the
            command would create (``command_ran``) go.
        state_dict (dict, optional): Tensors stored beside the payload.

    Returns:
        tuple[str, Path]: The checkpoint path and the marker path (which
        exists only if the command ran).
    """
    marker = Path(folder) / 'command_ran'
    path = Path(folder) / 'crafted.pth'
    torch.save(
        dict(
            state_dict=state_dict or {'w': torch.zeros(1)},
            meta=dict(note=RunsACommand(marker))), path)
    return str(path), marker


def load_script(relpath: str) -> ModuleType:
    """Import a script of the repository (e.g. ``tools/train.py``) as a
    module, to call its ``main`` / ``parse_args`` in-process.

    Args:
        relpath (str): Path relative to the repository root.

    Returns:
        module: The executed script module (``__name__`` is not
        ``'__main__'``, so ``main()`` does not run on import).
    """
    path = REPO / relpath
    name = 'rsrefseg_script_' + path.stem
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def referring_samples(batch_size: int = 2,
                      size: int = 128,
                      box: Tuple[int, int, int, int] = (20, 60, 30, 70),
                      texts: Optional[Sequence[str]] = None,
                      ori_shape: Optional[Tuple[int, int]] = None,
                      ignore_rows: int = 0,
                      with_img_path: bool = False) -> List[SegDataSample]:
    """Data samples with an expression and a box-shaped target.

    Args:
        batch_size (int): Number of samples B.
        size (int): Image side (``img_shape`` = ``pad_shape``).
        box (tuple): Target rows ``y0:y1`` and columns ``x0:x1`` as
            ``(y0, y1, x0, x1)``.
        texts (Sequence[str], optional): The expressions; default
            ``'the <i>th red roof'``.
        ori_shape (tuple, optional): Original size; default (size, size).
        ignore_rows (int): Top rows labelled 255 (ignored).
        with_img_path (bool): Add ``img_path='img_<i>.jpg'``.

    Returns:
        list[SegDataSample]: ``gt_sem_seg`` (1, size, size) int64 (0, 1,
        255) and the metainfo.
    """
    y0, y1, x0, x1 = box
    texts = texts or [f'the {i}th red roof' for i in range(batch_size)]
    samples = []
    for i in range(batch_size):
        gt = torch.zeros(1, size, size, dtype=torch.long)
        gt[:, y0:y1, x0:x1] = 1
        gt[:, :ignore_rows] = 255
        meta = dict(
            img_shape=(size, size),
            ori_shape=ori_shape or (size, size),
            pad_shape=(size, size),
            text=texts[i])
        if with_img_path:
            meta['img_path'] = f'img_{i}.jpg'
        sample = SegDataSample(metainfo=meta)
        sample.gt_sem_seg = PixelData(data=gt)
        samples.append(sample)
    return samples


def referring_batch(batch_size: int = 2, size: int = 128) -> dict:
    """A ``train_step`` batch: uint8 (3, size, size) images + samples."""
    torch.manual_seed(1)
    inputs = [
        torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
        for _ in range(batch_size)
    ]
    return dict(
        inputs=inputs, data_samples=referring_samples(batch_size, size))


def tiny_rsrefseg(**model_overrides) -> nn.Module:
    """The tiny demo model (``TINY_CONFIG``), seeded, in train mode.

    Args:
        **model_overrides: Merged into the config's ``model`` dict.
    """
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.update(model_overrides)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).train()


def perturb(model: nn.Module, scale: float = 0.05) -> nn.Module:
    """Move every parameter off its initialisation (norms and LoRA
    updates too), so that random weights give non-trivial masks; seeded by
    the caller's ``torch.manual_seed``."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def perturbed_model(config: str = TINY_CONFIG) -> nn.Module:
    """``init_referring_model(config)`` (random weights, seed 0, eval mode)
    passed through :func:`perturb`."""
    from rsrefseg_mm.apis import init_referring_model
    torch.manual_seed(0)
    return perturb(init_referring_model(config, None, device='cpu'))


def presence_layer(model: nn.Module) -> nn.Module:
    """The last layer of SAM's IoU head (a SAM 2.1 head: of its
    object-score head): the presence logit (index 0) of a head trained
    with ``presence_cfg``."""
    decoder = model.decode_head.mask_decoder
    head = getattr(decoder, 'pred_obj_score_head', None)
    if head is None:
        head = decoder.iou_prediction_head
    return head.layers[-1]


def centre_presence(model: nn.Module, presences: Sequence[float],
                    below: int) -> None:
    """Shift the presence bias so that the threshold (0.5: logit 0) falls
    midway between the ``below``-th and the next of ``presences``
    (sorted): random weights then put answers clearly on both sides."""
    logits = torch.logit(torch.tensor(presences).double()).sort().values
    with torch.no_grad():
        presence_layer(model).bias[0] -= float(logits[below - 1] +
                                               logits[below]) / 2


def spread_presence(model: nn.Module, image: np.ndarray,
                    texts: Sequence[str]) -> None:
    """Spread the presence logits (x50) and centre them between the middle
    two of ``texts`` on ``image``: half clearly present, half absent. Where
    those two lie within 0.02 (logit) of each other (random weights can
    give two expressions nearly one presence), the presence weights are
    redrawn (seeded) until they do not."""
    from rsrefseg_mm.apis import ReferringPredictor
    layer = presence_layer(model)
    predictor = ReferringPredictor(model)
    predictor.set_image(image)
    mid = len(texts) // 2
    with torch.no_grad():
        layer.weight[0].mul_(50)
        start = layer.weight[0].clone()
        for attempt in range(20):
            probs = [r.metainfo['presence'] for r in predictor.predict(texts)]
            logits = torch.logit(torch.tensor(probs).double()).sort().values
            if float(logits[mid] - logits[mid - 1]) >= 0.02:
                break
            gen = torch.Generator().manual_seed(attempt)
            layer.weight[0] = start + start.std() * torch.randn(
                start.shape, generator=gen)
    centre_presence(model, probs, mid)


def fake_runner(seen: dict) -> type:
    """A stand-in for mmengine's ``Runner`` in tests of ``tools/*.py``.

    ``Runner.from_cfg(cfg)`` records the final config in ``seen['cfg']``;
    ``train()`` / ``test()`` record ``seen['ran'] = 'train' | 'test'``.
    Monkeypatch it over the tool module's ``Runner``.
    """

    class FakeRunner:

        @staticmethod
        def from_cfg(cfg):
            seen['cfg'] = cfg
            return FakeRunner()

        def train(self):
            seen['ran'] = 'train'

        def test(self):
            seen['ran'] = 'test'

    return FakeRunner


def sam_block_pair(dim: int = 32,
                   heads: int = 4,
                   grid: int = 64,
                   ws: int = 14,
                   lora: bool = False) -> Tuple[nn.Module, nn.Module]:
    """A segment-anything windowed ``Block`` and its ``SAMFastBlock`` copy.

    The rel-pos tables and biases are drawn with std 0.5 (padded keys and
    values then matter); with ``lora`` the qkv / proj layers get LoRA (rank
    4) and only the LoRA weights train.

    Args:
        dim (int): Channels.
        heads (int): Attention heads.
        grid (int): Input side, in tokens.
        ws (int): Window size.
        lora (bool): Add LoRA to ``qkv`` and ``proj``.

    Returns:
        tuple[nn.Module, nn.Module]: ``(stock, fast)``, same weights.
    """
    import copy

    from segment_anything.modeling.image_encoder import Block

    from rsrefseg_mm.models.peft.tuning import apply_lora
    from rsrefseg_mm.models.sam.sam_fast_attention import (
        SAMFastAttention, SAMFastBlock, enable_fast_attention)
    torch.manual_seed(0)
    stock = Block(
        dim, heads, use_rel_pos=True, window_size=ws, input_size=(grid, grid))
    for name, p in stock.named_parameters():
        if 'rel_pos' in name or name.endswith('bias'):
            nn.init.normal_(p, std=0.5)  # padded keys/values = the bias
    if lora:
        apply_lora(stock, ['qkv', 'proj'], rank=4, alpha=8, drop_rate=0.)
        for name, p in stock.named_parameters():
            if 'lora_up' in name:
                nn.init.normal_(p, std=0.1)
            p.requires_grad_('lora_' in name)  # as apply_tuning does
    fast = copy.deepcopy(stock)
    enable_fast_attention(fast)
    assert type(fast) is SAMFastBlock and type(fast.attn) is SAMFastAttention
    return stock, fast


#: Web Mercator with non-square pixels (2 m wide, 3 m high) and an origin
#: away from zero (geo tests).
NON_SQUARE = Affine(2.0, 0.0, 1_300_000.0, 0.0, -3.0, 5_100_000.0)


def write_tif(path, data, crs, transform, **kwargs) -> str:
    """Write (C, H, W) ``data`` as a GeoTIFF (rasterio); returns the path."""
    import rasterio
    c, h, w = data.shape
    with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=w,
            height=h,
            count=c,
            dtype=data.dtype,
            crs=crs,
            transform=transform,
            **kwargs) as dst:
        dst.write(data)
    return str(path)


def recanvas_image(path, shape: Tuple[int, int]) -> None:
    """Rewrite an image file at ``shape`` (h, w), keeping its pixels at the
    top-left (cut, or padded with grey): an image a few pixels off its mask,
    as some RRSIS-D JPEGs are downloaded."""
    import cv2
    import numpy as np
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    out = np.full((shape[0], shape[1], 3), 128, np.uint8)
    h, w = min(shape[0], img.shape[0]), min(shape[1], img.shape[1])
    out[:h, :w] = img[:h, :w]
    assert cv2.imwrite(str(path), out), path


#: float32 machine epsilon (2 ** -23), twice the unit roundoff u.
FP32_EPS = float(np.finfo(np.float32).eps)
#: Relative tolerance of float32 parity between whole networks (ours vs
#: segment-anything / open_clip / transformers / ONNX Runtime, or one model
#: run two ways), applied to the reference's scale ``max |expected|``: the
#: absolute error of a network's sums follows the magnitudes summed, which
#: that scale stands for, not each output (which can cancel to zero).
#: Rounding differences (summation orders of MKL / oneDNN / OpenBLAS / MLAS,
#: batch shapes, fused kernels) measured up to 3.3e-6 of the scale (tiny
#: SAM vs transformers' SamModel; 2.5e-6 for SAM ViT-B at 1024 px), also
#: with ATen's generic kernels and AVX2-only MKL / oneDNN / OpenBLAS; a bug
#: gives far more: tanh vs erf GELU 1.7e-4, one LayerNorm weight 1 % off
#: 8.7e-3, swapped q / k projections 0.65 (tiny SigLIP).
NETWORK_RTOL = 2e-5

Array = Union[np.ndarray, torch.Tensor]


def _float64(x: Array) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def matmul_atol(*factors: Array) -> np.ndarray:
    """Element-wise tolerance for ``factors[0] @ factors[1] @ ...`` as two
    float32 libraries compute it (e.g. ONNX Runtime vs NumPy).

    Whatever the summation order (blocking, threads, SIMD lanes, FMA), a
    float32 dot product of length n is within ``gamma_n * sum |a_i b_i|``
    of the exact one, ``gamma_n = n u / (1 - n u)`` (Higham, Accuracy and
    Stability of Numerical Algorithms, 2nd ed., eq. 3.13); to first order a
    chain is within ``(gamma_n1 + gamma_n2 + ...) |A1| @ |A2| @ ...``, and
    two results within that bound of the exact product are within twice it
    of each other: ``eps * (n1 + n2 + ...) * (|A1| @ |A2| @ ...)``. The
    bound follows the magnitudes summed, not the result, which can cancel
    to far less (a relative tolerance on such an element fails on another
    CPU). A wrong or missing factor moves the result by about
    ``sum |a_i b_i| / sqrt(n)``, far above the bound.

    Args:
        factors (np.ndarray | torch.Tensor): The matrices (batched or not)
            in product order, at least two.

    Returns:
        np.ndarray: float64 bound of the product's shape.
    """
    assert len(factors) >= 2, 'a product of at least two factors'
    mags = [np.abs(_float64(f)) for f in factors]
    inner = sum(m.shape[-1] for m in mags[:-1])
    bound = mags[0]
    for m in mags[1:]:
        bound = bound @ m
    return FP32_EPS * inner * bound


def assert_close_to_reference(actual: Array,
                              expected: Array,
                              atol: Union[Array, float, None] = None,
                              rtol: float = NETWORK_RTOL,
                              what: str = '') -> float:
    """Assert ``|actual - expected| <= atol`` element-wise, with a tolerance
    derived from the operands' scale, not tuned on one machine.

    The absolute error of float32 sums grows with the magnitudes summed,
    which other CPUs (and libraries) sum in another order; a tolerance
    relative to each element fails where the element cancels to near zero,
    a fixed absolute one is meaningless for outputs far from unit scale.
    Give ``atol`` when the bound is known (:func:`matmul_atol`); for whole
    networks it is ``rtol * max |expected|`` (see :data:`NETWORK_RTOL`).

    Args:
        actual (np.ndarray | torch.Tensor): The result under test.
        expected (np.ndarray | torch.Tensor): The reference, same shape.
        atol (array | float, optional): Element-wise bound (broadcast).
        rtol (float): Relative to ``max |expected|`` when ``atol`` is None.
        what (str): Named in the failure message.

    Returns:
        float: The largest ``|actual - expected| / atol`` (<= 1).
    """
    a, e = _float64(actual), _float64(expected)
    assert a.shape == e.shape, f'{what}: shape {a.shape} vs {e.shape}'
    scale = float(np.abs(e).max()) if e.size else 0.
    if atol is None:
        assert scale > 0, f'{what}: the reference is all zeros'
        atol = rtol * scale
    err = np.abs(a - e)
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), err.shape)
    ratio = err / np.maximum(atol, np.finfo(np.float64).tiny)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    assert np.isfinite(a).all() and ratio[worst] <= 1, (
        f'{what}: |actual - expected| {err[worst]:.3g} > tolerance '
        f'{atol[worst]:.3g} at {tuple(map(int, worst))} (actual '
        f'{a[worst]:.7g}, expected {e[worst]:.7g}; max |diff| '
        f'{err.max():.3g}, max |expected| {scale:.3g})')
    return float(ratio.max())


def write_geotiff(path, height: int = 90, width: int = 120) -> str:
    """A 16-bit 4-band GeoTIFF (EPSG:32633, 10 m pixels) whose 7 left
    columns are nodata (0); returns the path."""
    rng = np.random.default_rng(1)
    data = rng.integers(200, 4000, (4, height, width), dtype=np.uint16)
    data[:, :, :7] = 0
    return write_tif(
        path,
        data,
        'EPSG:32633',
        from_origin(500000, 4100000, 10, 10),
        nodata=0)


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Records every request (``requests``, set per server) and answers
    404."""
    requests: list = []

    def _answer(self):
        self.requests.append((self.command, self.path))
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@contextmanager
def recording_http_server() -> Iterator[Tuple[int, list]]:
    """(port, requests) of an HTTP server on 127.0.0.1 that records every
    request it gets, for tests that prove none is sent."""
    handler = type('Handler', (RecordingHandler, ), dict(requests=[]))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], handler.requests
    finally:
        server.shutdown()
        server.server_close()
