"""RSRefSeg on ONNX Runtime: encode an image once, answer many expressions.

The graphs come from ``tools/deployment/export_onnx.py``; pre- and
post-processing repeat the PyTorch path (``rsrefseg_mm.apis``): the image is
read as there (bands, percentile stretch, nodata, region of interest),
resized bilinearly to the model's input size; the low-resolution logits are
resized bilinearly to the input size, then to the image size, and
thresholded after the sigmoid; nodata pixels are never the target.

Three graphs run: the image encoder once per image (or scene window), the
text encoder once per expression (its outputs kept for the next images and
windows, :attr:`OnnxReferringPredictor.text_cache`) and the decoder once
per image and batch of expressions.

For a model with a presence output (``presence_threshold`` in
``deploy.json``) the decoder graph also returns each expression's presence
probability, reported as :attr:`OnnxResult.presence`; the graph itself
gives an expression below the threshold empty-mask logits (as the PyTorch
head does), so its mask is empty and its probability 0 here too.
"""
import os
from typing import (Any, Dict, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import cv2
import numpy as np

from rsrefseg_core.deploy_info import (DEPLOY_FILE, DeployInfoError,
                                       read_deploy_info)
from rsrefseg_core.geo import RasterImage
from rsrefseg_core.geo.inputs import WORKING_SIZE_FACTOR
from rsrefseg_core.lru_cache import LRUCache
from rsrefseg_core.predictor import (TEXT_CACHE_SIZE, BaseReferringPredictor,
                                     zero_nodata)
from rsrefseg_core.scene.predictor import WindowAnswers
from rsrefseg_core.tokenizers import (CLIPBPE, GemmaSentencePiece,
                                      SigLIPSentencePiece)


class OnnxResult(NamedTuple):
    """One expression's prediction at the image (or ROI) size.

    Attributes:
        text (str): The expression.
        mask (np.ndarray): (H, W) uint8, 1 target, 0 background.
        probability (np.ndarray): (H, W) float32 foreground probability.
        global_map (np.ndarray): (H, W) float32 global text-filter
            activation in [0, 1].
        image (RasterImage): The input as read (georeference, nodata).
        presence (float, optional): Probability that the referent is in
            the image, for a model with a presence output (None without);
            below the model's presence threshold the mask is empty.
    """
    text: str
    mask: np.ndarray
    probability: np.ndarray
    global_map: np.ndarray
    image: RasterImage
    presence: Optional[float] = None


#: One expression's text-graph outputs: ``text_global`` (D,),
#: ``text_feats`` (L, D), ``text_mask`` (L,).
TextRow = Tuple[np.ndarray, ...]


def resize_bilinear(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(h, w) float32 -> (H, W), half-pixel centres (``F.interpolate``'s
    ``bilinear, align_corners=False``; no anti-aliasing)."""
    h, w = int(size[0]), int(size[1])
    if x.shape == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)


class OnnxReferringPredictor(BaseReferringPredictor):
    """``set_image`` / ``predict`` on the exported graphs, as
    ``rsrefseg_mm.apis.ReferringPredictor`` does with the PyTorch model:
    the same image / expression flow
    (:class:`rsrefseg_core.predictor.BaseReferringPredictor`: argument
    checks, cache keys, expression validation, batches), this class runs
    the three graphs. The text encoder's outputs of the last
    :data:`TEXT_CACHE_SIZE` expressions are kept (:attr:`text_cache`), so
    an expression asked again on another image, or on the windows of a
    scene (:meth:`decode_windows`), runs the decoder graph only.

    Args:
        model_dir (str): Folder written by ``export_onnx.py``
            (``deploy.json``, three graphs, the tokenizer file).
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
        verify_hashes (bool): Check every file of the folder against the
            sha256 recorded at export (reads the graphs once more).
            Defaults to True.
        spinning (bool): ONNX Runtime's worker threads spin for a while
            after each run (its default, lowest latency); False frees the
            cores at once, for other work sharing them (e.g. PyTorch
            interleaved in a benchmark).

    Raises:
        FileNotFoundError: No ``deploy.json`` in ``model_dir``.
        rsrefseg_core.deploy_info.DeployInfoError: A file changed since
            export, a name that leads out of the folder, a folder of the
            earlier two-graph layout (export it again), settings that
            would answer wrongly (see
            :func:`rsrefseg_core.deploy_info.read_deploy_info`), or a
            decoder with a ``presence`` output and no
            ``presence_threshold`` (or the reverse).
    """

    def __init__(self,
                 model_dir: str,
                 providers: Optional[Sequence[str]] = None,
                 max_batch: int = 8,
                 cache_size: int = 0,
                 threads: Optional[int] = None,
                 max_read_size: Union[int, str, None] = 'auto',
                 verify_hashes: bool = True,
                 spinning: bool = True) -> None:
        import onnxruntime as ort

        # format, files confined to the folder and equal to their recorded
        # sha256, a finite threshold in (0, 1)
        self.info = read_deploy_info(model_dir, verify_hashes=verify_hashes)
        paths = self.info['paths']
        self.input_size = tuple(self.info['input_size'])
        self.threshold = float(self.info['threshold'])
        # a graph traced without dynamic axes takes exactly its traced count
        self.dynamic = bool(self.info['dynamic_expressions'])
        super().__init__(
            max_batch=max_batch,
            cache_size=cache_size,
            max_read_size=max_read_size,
            auto_read_size=WORKING_SIZE_FACTOR * max(self.input_size),
            batch_size=None
            if self.dynamic else int(self.info['num_expressions']))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry('session.intra_op.allow_spinning',
                                             '0')
        providers = list(providers or ['CPUExecutionProvider'])
        self.encoder = ort.InferenceSession(
            paths['image_encoder'], options, providers=providers)
        self.text_encoder = ort.InferenceSession(
            paths['text_encoder'], options, providers=providers)
        self.decoder = ort.InferenceSession(
            paths['decoder'], options, providers=providers)
        self.tokenizer = self._tokenizer(paths['tokenizer'],
                                         self.info['tokenizer'])
        #: Text-graph outputs per expression (:data:`TextRow`).
        self.text_cache = LRUCache(TEXT_CACHE_SIZE)
        #: presence threshold of the model (None: no presence output)
        self.presence_threshold = self.info['presence_threshold']
        #: presence threshold of a scene's windows (ScenePredictor)
        self.scene_presence_threshold = \
            self.info['scene_presence_threshold']
        self.text_inputs = [i.name for i in self.text_encoder.get_inputs()]
        self.text_outputs = [o.name for o in self.text_encoder.get_outputs()]
        self.decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        self.decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        if ('presence' in self.decoder_outputs) != \
                (self.presence_threshold is not None):
            raise DeployInfoError(
                f'{os.path.join(model_dir, DEPLOY_FILE)}: the decoder graph '
                f'{self.info["decoder"]!r} has outputs '
                f'{self.decoder_outputs} but deploy.json has presence_'
                f'threshold={self.presence_threshold!r}; a presence output '
                'and its threshold go together (export the model again)')

    @staticmethod
    def _tokenizer(path: str, spec: dict):
        if spec['kind'] == 'clip-bpe':
            return CLIPBPE(path, spec['context_length'])
        if spec['kind'] == 'siglip-sentencepiece':
            return SigLIPSentencePiece(path, spec['context_length'],
                                       spec['eos_token'], spec['pad_token'],
                                       spec['unk_token'])
        if spec['kind'] == 'gemma-sentencepiece':
            return GemmaSentencePiece(path, spec['context_length'],
                                      spec['lowercase'], spec['eos_token'],
                                      spec['pad_token'], spec['bos_token'],
                                      spec['unk_token'])
        raise ValueError(f'unknown tokenizer kind {spec["kind"]!r}')

    @property
    def embeddings(self) -> Optional[tuple]:
        """The image encoder's outputs for the set image."""
        return self.encoded

    def preprocess(self, image: RasterImage) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 RGB 0-255 at the
        model's input size (OpenCV bilinear, as mmcv's ``Resize``)."""
        h, w = self.input_size
        img = cv2.resize(image.img, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(
            img[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32)

    def _encode(self, raster: RasterImage) -> tuple:
        """The image-encoder graph on ``raster``."""
        return tuple(
            self.encoder.run(None, {'image': self.preprocess(raster)}))

    def _tokens(self, texts: List[str]) -> tuple:
        tokens = self.tokenizer(texts) \
            if isinstance(self.tokenizer, CLIPBPE) else \
            self.tokenizer.tokenize(texts)[:2]
        return tokens if isinstance(tokens, tuple) else (tokens, )

    def encode_texts(self, texts: List[str]) -> Dict[str, np.ndarray]:
        """The text encoder's outputs for ``texts``, one row each.

        Each distinct expression is taken from :attr:`text_cache` or
        encoded once: the missing ones run through the text graph together
        (in batches of :attr:`batch`, padded to a fixed traced count), and
        are kept.

        Args:
            texts (list[str]): N expressions (repeats allowed).

        Returns:
            dict: ``text_global`` (N, D), ``text_feats`` (N, L, D) and
            ``text_mask`` (N, L), by the text graph's output names.
        """
        rows: Dict[str, TextRow] = {}
        missing = []
        for text in dict.fromkeys(texts):
            row = self.text_cache.lookup(text)
            if row is None:
                missing.append(text)
            else:
                rows[text] = row
        for batch, count in self.batches(missing):
            tokens = self._tokens(batch)
            outputs = self.text_encoder.run(
                None, dict(zip(self.text_inputs, tokens)))
            for i, text in enumerate(batch[:count]):
                rows[text] = tuple(o[i] for o in outputs)
                self.text_cache.store(text, rows[text])
        return {
            name: np.stack([rows[text][k] for text in texts])
            for k, name in enumerate(self.text_outputs)
        }

    def _run_decoder(self, image: Dict[str, np.ndarray],
                     text: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The decoder graph on one encoded image (arrays with their batch
        dimension of 1) and N encoded expressions, by output name."""
        arrays = dict(image, **text)
        outputs = self.decoder.run(
            None, {name: arrays[name]
                   for name in self.decoder_inputs})
        return dict(zip(self.decoder_outputs, outputs))

    def _image_arrays(self) -> Dict[str, np.ndarray]:
        """The set image's encoder outputs by name."""
        names = [o.name for o in self.encoder.get_outputs()]
        return dict(zip(names, self.encoded))

    def _decode(self, texts: List[str], count: int) -> List[OnnxResult]:
        """The text graph (for expressions not in :attr:`text_cache`) and
        the decoder graph on the set image, then :meth:`_postprocess` of
        the first ``count`` expressions (the rest is padding)."""
        outputs = self._run_decoder(self._image_arrays(),
                                    self.encode_texts(texts))
        presence = outputs.get('presence')
        presence = [None] * count if presence is None else \
            [float(p) for p in presence[:count]]
        return [
            self._postprocess(text, lg, gm, pr)
            for text, lg, gm, pr in zip(texts[:count], outputs['logits'],
                                        outputs['global_map'], presence)
        ]

    def _postprocess(self,
                     text: str,
                     logits: np.ndarray,
                     global_map: np.ndarray,
                     presence: Optional[float] = None) -> OnnxResult:
        """One expression's graph outputs -> :class:`OnnxResult`.

        Args:
            text (str): The expression.
            logits (np.ndarray): (1, Hm, Wm) mask logits (already gated by
                presence in the graph of a model with a presence output).
            global_map (np.ndarray): (h, w) global activation.
            presence (float, optional): Presence probability, or None.

        Returns:
            OnnxResult: At the image (or ROI) size.
        """
        image = self.image
        size = image.img.shape[:2]
        prob = self._probability(logits, size)
        mask = (prob > self.threshold).astype(np.uint8)
        act = np.clip(resize_bilinear(global_map, size), 0,
                      1).astype(np.float32)
        zero_nodata(
            image.nodata_mask,
            mask,
            prob,
            act,
            where=f'the prediction of {text!r} on {image.source}')
        return OnnxResult(text, mask, prob, act, image, presence)

    def _probability(self, logits: np.ndarray, size: Tuple[int,
                                                           int]) -> np.ndarray:
        """(1, Hm, Wm) logits -> (H, W) float32 foreground probability:
        resized to the model's input, then to ``size``, as mmseg does."""
        logits = resize_bilinear(
            resize_bilinear(logits[0], self.input_size), size)
        # an absent expression's logits (-1e4) overflow exp to inf: prob 0
        with np.errstate(over='ignore'):
            prob = 1 / (1 + np.exp(-logits.astype(np.float64)))
        return prob.astype(np.float32)

    # -- scenes (rsrefseg_core.scene.ScenePredictor) -------------------------
    @property
    def window_size(self) -> Tuple[int, int]:
        """Default scene window: deploy.json's ``window_size`` (the
        config's ``scene_window_size``), else the model's input size."""
        return tuple(self.info.get('window_size') or self.input_size)

    @property
    def mask_threshold(self) -> float:
        """Foreground above this probability."""
        return self.threshold

    def engine_key(self) -> str:
        """A digest of the sha256 of every file of the folder (deploy.json
        records them)."""
        return 'onnx:' + self.info['files_sha256']

    def encode_windows(self,
                       windows: List[RasterImage]) -> List[Dict[str, Any]]:
        """The image-encoder graph on each window (graphs take one
        image)."""
        names = [o.name for o in self.encoder.get_outputs()]
        return [{
            name: value[0]
            for name, value in zip(names, self._encode(window))
        } for window in windows]

    def text_filter(self, text: str) -> Tuple[np.ndarray, float, float]:
        """The sentence feature ``text_global`` (D,) of an expression and
        the global text filter's scale and bias (``deploy.json``'s
        ``text_filter``): a window's filter is ``sigmoid(scale *
        cos(img_feats, text_global) + bias)``.

        Raises:
            ValueError: The export records no text filter (a prompter
                without one, or a folder exported before it was recorded).
        """
        info = self.info.get('text_filter')
        if info is None:
            raise ValueError(
                f'{self.info["paths"]["decoder"]}: its deploy.json records no '
                'text_filter (a '
                'prompter without a global text filter, or exported before '
                'it was recorded: export the model again with '
                'tools/deployment/export_onnx.py)')
        text_global = self.encode_texts([text])['text_global'][0]
        return text_global, float(info['scale']), float(info['bias'])

    def decode_windows(self, encodings: List[Dict[str, Any]],
                       shape: Tuple[int, int], text: str) -> WindowAnswers:
        """One expression on encoded windows of ``shape``: the text graph
        runs once per expression (its outputs kept in :attr:`text_cache`
        for the next windows and scenes), the decoder graph window by
        window (it takes one image).

        Returns:
            tuple: (h, w) float32 probability per window (None for a window
            whose presence is below :attr:`presence_threshold`: it counts
            nothing, so it is not resized) and the (n,) presence
            probabilities (None without a presence output).
        """
        encoded = self.encode_texts([text] * (self.fixed_batch or 1))
        probs, presence = [], []
        for arrays in encodings:
            outputs = self._run_decoder(
                {name: value[None]
                 for name, value in arrays.items()}, encoded)
            absent = False
            if 'presence' in outputs:
                presence.append(float(outputs['presence'][0]))
                absent = presence[-1] < self.presence_threshold
            if absent:
                probs.append(None)
            else:
                probs.append(self._probability(outputs['logits'][0], shape))
        return probs, np.array(presence, np.float32) if presence else None

    def predict(
        self,
        texts: Union[str,
                     Sequence[str]]) -> Union[OnnxResult, List[OnnxResult]]:
        """Segment what each expression refers to in the set image.

        Raises:
            RuntimeError: No image was set.
            ValueError: No expression, or one is empty once cleaned (the
                PyTorch predictor's check,
                :func:`rsrefseg_core.text.check_expression`).
        """
        return super().predict(texts)
