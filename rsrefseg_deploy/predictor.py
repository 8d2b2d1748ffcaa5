"""RSRefSeg on ONNX Runtime: encode an image once, answer many expressions.

The graphs come from ``tools/deployment/export_onnx.py``; pre- and
post-processing repeat the PyTorch path (``rsrefseg_mm.apis``): the image is
read as there (bands, percentile stretch, nodata, region of interest),
resized bilinearly to the model's input size; the low-resolution logits are
resized bilinearly to the input size, then to the image size, and
thresholded after the sigmoid; nodata pixels are never the target.
"""
import json
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np

from rsrefseg_core.geo import (DEFAULT_STRETCH, RasterImage, image_cache_key,
                               load_referring_image)
from rsrefseg_core.geo.inputs import WORKING_SIZE_FACTOR
from rsrefseg_core.lru_cache import LRUCache
from rsrefseg_core.tokenizers import CLIPBPE, SigLIPSentencePiece

DEPLOY_FORMAT = 'rsrefseg-onnx/1'


class OnnxResult(NamedTuple):
    """One expression's prediction at the image (or ROI) size.

    Attributes:
        text (str): The expression.
        mask (np.ndarray): (H, W) uint8, 1 target, 0 background.
        probability (np.ndarray): (H, W) float32 foreground probability.
        global_map (np.ndarray): (H, W) float32 global text-filter
            activation in [0, 1].
        image (RasterImage): The input as read (georeference, nodata).
    """
    text: str
    mask: np.ndarray
    probability: np.ndarray
    global_map: np.ndarray
    image: RasterImage


def resize_bilinear(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(h, w) float32 -> (H, W), half-pixel centres (``F.interpolate``'s
    ``bilinear, align_corners=False``; no anti-aliasing)."""
    h, w = int(size[0]), int(size[1])
    if x.shape == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)


class OnnxReferringPredictor:
    """``set_image`` / ``predict`` on the exported graphs, as
    ``rsrefseg_mm.apis.ReferringPredictor`` does with the PyTorch model.

    Args:
        model_dir (str): Folder written by ``export_onnx.py``
            (``deploy.json``, two graphs, the tokenizer file).
        providers (Sequence[str], optional): ONNX Runtime execution
            providers. Defaults to ``['CPUExecutionProvider']``.
        max_batch (int): Most expressions decoded in one call (graphs
            exported with ``--dynamic-expressions``; else the traced count).
        cache_size (int): Encoded images kept (by content). Defaults to 0.
        threads (int, optional): ONNX Runtime intra-op threads.
        max_read_size (int | str | None): Longest side of raster reads
            (larger rasters are decimated while reading): ``'auto'``
            (default) is ``WORKING_SIZE_FACTOR`` x the model's input size,
            as in ``rsrefseg_mm.apis``; None reads at the file's resolution.
    """

    def __init__(self,
                 model_dir: str,
                 providers: Optional[Sequence[str]] = None,
                 max_batch: int = 8,
                 cache_size: int = 0,
                 threads: Optional[int] = None,
                 max_read_size: Union[int, str, None] = 'auto') -> None:
        import onnxruntime as ort
        path = osp.join(model_dir, 'deploy.json')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} not found: export a model first with '
                'tools/deployment/export_onnx.py CONFIG CHECKPOINT --out-dir '
                f'{model_dir}')
        with open(path) as f:
            self.info = json.load(f)
        if self.info.get('format') != DEPLOY_FORMAT:
            raise ValueError(f'{path}: format {self.info.get("format")!r}, '
                             f'expected {DEPLOY_FORMAT!r}')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ['CPUExecutionProvider'])
        self.encoder = ort.InferenceSession(
            osp.join(model_dir, self.info['image_encoder']),
            options,
            providers=providers)
        self.decoder = ort.InferenceSession(
            osp.join(model_dir, self.info['decoder']),
            options,
            providers=providers)
        self.tokenizer = self._tokenizer(model_dir, self.info['tokenizer'])
        self.input_size = tuple(self.info['input_size'])
        self.threshold = float(self.info['threshold'])
        # a graph traced without dynamic axes takes exactly its traced count
        self.dynamic = bool(self.info['dynamic_expressions'])
        self.batch = int(max_batch) if self.dynamic else int(
            self.info['num_expressions'])
        self.max_read_size = WORKING_SIZE_FACTOR * max(self.input_size) \
            if max_read_size == 'auto' else max_read_size
        self.cache = LRUCache(cache_size)
        self.reset_image()

    @staticmethod
    def _tokenizer(model_dir: str, spec: dict):
        path = osp.join(model_dir, spec['file'])
        if spec['kind'] == 'clip-bpe':
            return CLIPBPE(path, spec['context_length'])
        if spec['kind'] == 'siglip-sentencepiece':
            return SigLIPSentencePiece(path, spec['context_length'],
                                       spec['eos_token'], spec['pad_token'],
                                       spec['unk_token'])
        raise ValueError(f'unknown tokenizer kind {spec["kind"]!r}')

    @property
    def is_image_set(self) -> bool:
        """Whether :meth:`set_image` has encoded an image."""
        return self.embeddings is not None

    def reset_image(self) -> None:
        """Forget the current image and its embeddings."""
        self.image: Optional[RasterImage] = None
        self.embeddings: Optional[tuple] = None
        self.from_cache = False

    def preprocess(self, image: RasterImage) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 RGB 0-255 at the
        model's input size (OpenCV bilinear, as mmcv's ``Resize``)."""
        h, w = self.input_size
        img = cv2.resize(image.img, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(
            img[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32)

    def set_image(self,
                  image,
                  bands: Optional[Sequence[int]] = None,
                  stretch=DEFAULT_STRETCH,
                  roi: Optional[Sequence[float]] = None,
                  roi_crs: str = 'pixel',
                  name: Optional[str] = None) -> RasterImage:
        """Read and encode an image (path, array or ``RasterImage``);
        arguments as ``rsrefseg_mm.apis.ReferringPredictor.set_image``."""
        self.reset_image()
        key = image_cache_key(image, bands, stretch, roi, roi_crs,
                              self.max_read_size) if self.cache.size else None
        cached = self.cache.lookup(key)
        if cached is not None:
            self.image, self.embeddings = cached
            self.from_cache = True
            return self.image
        raster = load_referring_image(image, 0, bands, stretch, roi, roi_crs,
                                      name, self.max_read_size)
        self.embeddings = tuple(
            self.encoder.run(None, {'image': self.preprocess(raster)}))
        self.image = raster
        self.cache.store(key, (raster, self.embeddings))
        return raster

    def _check(self, texts: List[str]) -> None:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not self.tokenizer.clean(text):
                raise ValueError(
                    f'expression {i} is empty once the tokenizer has cleaned '
                    f'it: {text!r}')

    def _decode(self, texts: List[str]):
        tokens = self.tokenizer(texts) \
            if isinstance(self.tokenizer, CLIPBPE) else \
            self.tokenizer.tokenize(texts)[:2]
        tokens = tokens if isinstance(tokens, tuple) else (tokens, )
        names = self.info['decoder_inputs']
        feeds = dict(zip(names, self.embeddings + tokens))
        return self.decoder.run(None, feeds)

    def _postprocess(self, text: str, logits: np.ndarray,
                     global_map: np.ndarray) -> OnnxResult:
        image = self.image
        size = image.img.shape[:2]
        logits = resize_bilinear(
            resize_bilinear(logits[0], self.input_size), size)
        prob = 1 / (1 + np.exp(-logits.astype(np.float64)))
        prob = prob.astype(np.float32)
        mask = (prob > self.threshold).astype(np.uint8)
        act = np.clip(resize_bilinear(global_map, size), 0, 1)
        if image.nodata_mask is not None:
            nodata = np.asarray(image.nodata_mask, bool)
            mask[nodata] = 0
            prob[nodata] = 0
            act[nodata] = 0
        return OnnxResult(text, mask, prob, act.astype(np.float32), image)

    def predict(
        self,
        texts: Union[str,
                     Sequence[str]]) -> Union[OnnxResult, List[OnnxResult]]:
        """Segment what each expression refers to in the set image.

        Raises:
            RuntimeError: No image was set.
            ValueError: An expression is empty.
        """
        if not self.is_image_set:
            raise RuntimeError('OnnxReferringPredictor.predict: call '
                               'set_image() first')
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise ValueError('OnnxReferringPredictor.predict: no expression')
        self._check(texts)
        results = []
        for start in range(0, len(texts), self.batch):
            chunk = texts[start:start + self.batch]
            padded = chunk if self.dynamic else \
                chunk + chunk[-1:] * (self.batch - len(chunk))
            logits, maps = self._decode(padded)
            results += [
                self._postprocess(t, lg, gm)
                for t, lg, gm in zip(chunk, logits, maps)
            ]
        return results[0] if single else results
