"""Whole scenes at the file's resolution: sliding windows, encoded once,
any number of expressions.

.. code:: text

    set_scene(file)                          # once per scene
        SceneReader: the stretch of the whole scene, then window by window
        runtime.encode_windows(batch)   -> WindowEmbeddings (memory / file)
    predict(texts)                           # per expression
        filter_gate: windows whose global text filter stays below it
            are not decoded (runtime.text_filter, window_filter_max)
        runtime.decode_windows(batch, text) -> probability, presence
        flip_check: the windows that pass, flipped (and the expression's
            direction words swapped), encoded and decoded again
        ProbabilityMosaic (windows judged absent count nothing)
            -> SceneOutputs: mask GeoTIFF strip by strip, polygons
        SceneGrid.cell_presence -> coarse presence raster

The runtime is the PyTorch predictor (``rsrefseg_mm.apis``) or the ONNX
Runtime one (``rsrefseg_deploy``); both implement :class:`SceneRuntime`.
Memory is bounded by the window, the batch, one strip of ``crop_size``
rows of the scene and the embeddings kept in memory (``max_memory``), not
by the scene.
"""
import dataclasses
import os
import os.path as osp
import re
import time
import warnings
from typing import List, NamedTuple, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from ..flip import FLIP_DIRECTIONS, flip_array, flip_referring_text
from ..geo import DEFAULT_STRETCH, RasterImage
from ..geo.export import DEFAULT_MIN_AREA_PX, write_geojson
from ..geo.reader import require_rasterio
from ..geo.stretch import StretchType
from ..predictor import check_max_batch
from ..progress import track
from ..text import check_expression
from .embeddings import DEFAULT_MEMORY_LIMIT, Arrays, WindowEmbeddings
from .grid import SceneGrid
from .mosaic import ProbabilityMosaic
from .outputs import SceneOutputs
from .reader import SceneReader, SceneSource
from .text_filter import window_filter_max

#: ``decode_windows``' answer: (h, w) float32 probability per window (None
#: for a window below the presence threshold) and the (n,) presence (None
#: for a model without presence).
WindowAnswers = Tuple[List[Optional[np.ndarray]], Optional[np.ndarray]]


class SceneRuntime(Protocol):
    """What a runtime gives scene inference (both predictors have it)."""

    #: Default window ``(h, w)`` in the file's pixels.
    window_size: Tuple[int, int]
    #: Foreground above this probability.
    mask_threshold: float
    #: Windows below this presence count nothing (None: no presence).
    presence_threshold: Optional[float]
    #: The stricter default of a scene's windows (None: no presence).
    scene_presence_threshold: Optional[float]

    def engine_key(self) -> str:
        """Identifies the weights (a digest), for embeddings files."""

    def encode_windows(self, windows: List[RasterImage]) -> List[Arrays]:
        """The image towers on each window, as NumPy arrays."""

    def decode_windows(self, encodings: List[Arrays], shape: Tuple[int, int],
                       text: str) -> WindowAnswers:
        """One expression on encoded windows of ``shape`` (h, w): the
        (h, w) float32 probability of each window (None, or any value, for
        a window below :attr:`presence_threshold`: it counts nothing), and
        the (n,) presence probabilities (None without presence)."""

    def text_filter(self, text: str) -> Tuple[np.ndarray, float, float]:
        """The expression's sentence feature (D,) and the global text
        filter's scale and bias (``ScenePredictor(filter_gate=...)``)."""


class SceneResult(NamedTuple):
    """One expression's answer on a scene.

    Attributes:
        text (str): The expression.
        presence (float | None): The highest window presence (None for a
            model without presence).
        found (bool): Whether any pixel is the target.
        target_pixels (int): Pixels of the mask.
        window_presence (np.ndarray): (num_windows,) presence per window
            (NaN for windows without data, or without a presence output).
        presence_grid (np.ndarray): Coarse presence raster, one cell per
            stride (:meth:`SceneGrid.cell_presence`).
        geojson (dict | None): The mask's polygons merged across window
            seams, in map coordinates.
        probability (np.ndarray | None): (H, W) float32 foreground
            probability when kept in memory.
        mask_path (str | None): The mask GeoTIFF on the scene's grid.
        presence_path (str | None): The presence GeoTIFF.
        geojson_path (str | None): The polygons' file.
        seconds (float): Wall time of the expression.
        threshold (float): The mask threshold (for :attr:`mask`).
    """
    text: str
    presence: Optional[float]
    found: bool
    target_pixels: int
    window_presence: np.ndarray
    presence_grid: np.ndarray
    geojson: Optional[dict]
    probability: Optional[np.ndarray]
    mask_path: Optional[str]
    presence_path: Optional[str]
    geojson_path: Optional[str]
    seconds: float
    threshold: float

    @property
    def mask(self) -> Optional[np.ndarray]:
        """(H, W) uint8 mask, when the probability was kept."""
        return None if self.probability is None else \
            (self.probability > self.threshold).astype(np.uint8)


def slug(text: str, max_chars: int = 40) -> str:
    """A file-name-safe form of an expression."""
    name = re.sub(r'[^0-9A-Za-z]+', '_', text).strip('_').lower()
    return name[:max_chars] or 'expression'


class ScenePredictor:
    """Sliding-window inference over whole scenes (see the module
    docstring).

    Args:
        runtime (SceneRuntime): A ``ReferringPredictor`` or an
            ``OnnxReferringPredictor``.
        crop_size (int | tuple, optional): Window ``(h, w)`` in the file's
            pixels; defaults to the runtime's ``window_size`` (each window
            is resized to the model's input, as the test pipeline resizes
            an image).
        stride (int | tuple, optional): Step between windows; defaults to
            3/4 of the window (a quarter overlap).
        window_batch (int): Windows encoded (and decoded) together.
        max_memory (int): Bytes of window embeddings kept in memory;
            beyond, they go to a file (``embeddings_file`` of
            :meth:`set_scene`, else a temporary one).
        progress (bool, optional): Draw progress bars on stderr (windows/s,
            ETA); None: on terminals only.
        presence_threshold (float, optional): A window whose presence is
            below it counts nothing; defaults to the runtime's
            ``scene_presence_threshold`` (the model's
            ``presence_cfg.scene_threshold``). Not below the runtime's
            ``presence_threshold``, under which windows are not decoded.
        flip_check (Sequence[str]): Flips (``'horizontal'``,
            ``'vertical'``, ``'diagonal'``) a window must also pass: a
            window whose presence passes is read again, flipped, with the
            expression's direction words swapped (``left`` <-> ``right``
            ...), encoded and decoded; its presence becomes the least of
            the views' and its probability their mean (flipped back).
            Nothing is re-encoded for windows below the threshold, so the
            check costs per expression the windows that pass, not the
            scene. Empty (default): one view.
        filter_gate (float, optional): A window whose global text filter
            (the prompter's ``s * cos(img_feats, t) + b``, its largest
            logit over the window; :func:`window_filter_max`) is below it
            is not decoded: it counts nothing and has no presence (NaN).
            The decoders then run on the windows where something resembles
            the expression, not on the scene, which is what a follow-up
            expression costs. None (default): every window is decoded.
    """

    def __init__(self,
                 runtime: SceneRuntime,
                 crop_size=None,
                 stride=None,
                 window_batch: int = 4,
                 max_memory: int = DEFAULT_MEMORY_LIMIT,
                 progress: Optional[bool] = None,
                 presence_threshold: Optional[float] = None,
                 flip_check: Sequence[str] = (),
                 filter_gate: Optional[float] = None) -> None:
        self.runtime = runtime
        #: Windows below this presence count nothing (None: no presence).
        self.presence_threshold = _presence_threshold(runtime,
                                                      presence_threshold)
        self.flip_check = _flip_check(flip_check, self.presence_threshold)
        if filter_gate is not None and not np.isfinite(filter_gate):
            raise ValueError('filter_gate must be a finite logit or None, '
                             f'got {filter_gate!r}')
        self.filter_gate = None if filter_gate is None else float(filter_gate)
        self.crop_size = runtime.window_size if crop_size is None else \
            crop_size
        self.stride = stride
        SceneGrid.build(1, 1, self.crop_size, stride)  # checks the sizes
        self.window_batch = check_max_batch(window_batch, 'window_batch')
        self.max_memory = max_memory
        self.progress = progress
        self.reader: Optional[SceneReader] = None
        self.grid: Optional[SceneGrid] = None
        self.embeddings: Optional[WindowEmbeddings] = None
        #: Seconds :meth:`set_scene` took (reading and encoding).
        self.encode_seconds = 0.0

    # -- the scene ------------------------------------------------------
    def set_scene(self,
                  source: SceneSource,
                  bands: Optional[Sequence[int]] = None,
                  stretch: StretchType = DEFAULT_STRETCH,
                  name: Optional[str] = None,
                  embeddings_file: Optional[str] = None) -> SceneReader:
        """Read and encode every window of a scene.

        Args:
            source: A raster file (read window by window), an array or a
                ``RasterImage``.
            bands, stretch, name: As ``set_image``; the stretch is taken
                once on the whole scene.
            embeddings_file (str, optional): Keep the window embeddings in
                this file; when it exists (written for the same scene,
                model and windows) it is reopened instead of encoding.

        Returns:
            SceneReader: The open scene.
        """
        self.close()
        start = time.perf_counter()
        self.reader = SceneReader(source, bands, stretch, name)
        self.grid = SceneGrid.build(*self.reader.shape, self.crop_size,
                                    self.stride)
        meta = dict(
            scene=self.reader.key,
            engine=self.runtime.engine_key(),
            grid=[
                self.grid.height, self.grid.width,
                list(self.grid.crop_size),
                list(self.grid.stride)
            ])
        if embeddings_file is not None and osp.exists(embeddings_file):
            self.embeddings = WindowEmbeddings.open(embeddings_file, meta)
        else:
            self.embeddings = WindowEmbeddings(meta, embeddings_file,
                                               self.max_memory)
            self._encode_all()
        self.encode_seconds = time.perf_counter() - start
        return self.reader

    def _batches(self, items: list, description: str):
        """``items`` in batches of :attr:`window_batch`, the bar advancing
        per item."""
        batch = []
        for item in track(
                items, description, unit='window', force=self.progress):
            batch.append(item)
            if len(batch) == self.window_batch:
                yield batch
                batch = []
        if batch:
            yield batch

    def _encode_all(self) -> None:
        for batch in self._batches(
                list(enumerate(self.grid.boxes)),
                f'encode {osp.basename(self.reader.source)}'):
            windows = [(i, self.reader.read(box)) for i, box in batch]
            with_data = [(i, w) for i, w in windows if not _empty(w)]
            for i, w in windows:
                if _empty(w):
                    self.embeddings.put(i, None)
            if with_data:
                encoded = self.runtime.encode_windows(
                    [w for _, w in with_data])
                for (i, _), arrays in zip(with_data, encoded):
                    self.embeddings.put(i, arrays)
        self.embeddings.finish()

    # -- the expressions ------------------------------------------------
    def predict(
            self,
            texts: Union[str, Sequence[str]],
            out_dir: Optional[str] = None,
            keep_probability: bool = False,
            min_area_px: float = DEFAULT_MIN_AREA_PX,
            stem: Optional[str] = None
    ) -> Union[SceneResult, List[SceneResult]]:
        """Segment what each expression refers to in the set scene.

        Args:
            texts (str | Sequence[str]): One or more expressions.
            out_dir (str, optional): Write ``<stem>_<expression>_mask.tif``
                (the scene's grid), ``..._presence.tif`` (one cell per
                stride) and ``..._mask.geojson`` there.
            keep_probability (bool): Return the (H, W) probability (scenes
                that fit in memory).
            min_area_px (float): Smaller polygons are dropped.
            stem (str, optional): File name stem (default: the scene's).

        Returns:
            SceneResult | list[SceneResult]: One per expression.
        """
        if self.embeddings is None:
            raise RuntimeError('ScenePredictor.predict: call set_scene() '
                               'first')
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            raise ValueError('ScenePredictor.predict: no expression')
        for i, text in enumerate(texts):
            check_expression(text, f'expression {i}')
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            stem = stem or osp.splitext(osp.basename(self.reader.source))[0]
        results = [
            self._predict_one(text, out_dir, stem, keep_probability,
                              min_area_px) for text in texts
        ]
        return results[0] if single else results

    def _predict_one(self, text: str, out_dir: Optional[str],
                     stem: Optional[str], keep_probability: bool,
                     min_area_px: float) -> SceneResult:
        start = time.perf_counter()
        base = None if out_dir is None else osp.join(out_dir,
                                                     f'{stem}_{slug(text)}')
        outputs = SceneOutputs(
            self.reader,
            self.runtime.mask_threshold,
            mask_path=None if base is None else base + '_mask.tif',
            keep_probability=keep_probability,
            text=text)
        mosaic = ProbabilityMosaic(*self.reader.shape, self.grid.crop_size[0],
                                   outputs)
        boxes = self.grid.boxes
        presence = np.full(len(boxes), np.nan, np.float32)
        threshold = self.presence_threshold
        text_filter = None if self.filter_gate is None else \
            self.runtime.text_filter(text)
        try:
            todo = list(range(len(boxes)))
            if text_filter is not None:
                todo = self._gate(todo, text_filter)
            added = 0  # windows given to the mosaic, in the grid's order
            for batch in self._batches(todo, f'{text!r}'):
                encoded = [(i, self.embeddings.get(i)) for i in batch]
                with_data = [(i, e) for i, e in encoded if e is not None]
                probs = {}
                if with_data:
                    y1, y2, x1, x2 = boxes[with_data[0][0]]
                    out, pres = self.runtime.decode_windows(
                        [e for _, e in with_data], (y2 - y1, x2 - x1), text)
                    for k, (i, _) in enumerate(with_data):
                        keep = pres is None or threshold is None or \
                            pres[k] >= threshold
                        if pres is not None:
                            presence[i] = pres[k]
                        probs[i] = out[k] if keep else None
                    if self.flip_check:
                        self._check_flips(text, probs, presence)
                for i in range(added, batch[-1] + 1):
                    mosaic.add(boxes[i], probs.get(i))
                added = batch[-1] + 1
            for i in range(added, len(boxes)):
                mosaic.add(boxes[i], None)
            mosaic.close()
        finally:
            outputs.close()
        geojson = outputs.geojson(min_area_px)
        grid = self.grid.cell_presence(presence)
        paths = dict(mask_path=outputs.mask_path)
        if base is not None:
            paths['geojson_path'] = write_geojson(base + '_mask.geojson',
                                                  geojson)
            paths['presence_path'] = self._write_presence(
                base + '_presence.tif', grid, text)
        has_presence = threshold is not None and not np.isnan(presence).all()
        result = SceneResult(
            text=text,
            presence=float(np.nanmax(presence)) if has_presence else None,
            found=outputs.target_pixels > 0,
            target_pixels=outputs.target_pixels,
            window_presence=presence,
            presence_grid=grid,
            geojson=geojson,
            probability=outputs.probability,
            mask_path=paths.get('mask_path'),
            presence_path=paths.get('presence_path'),
            geojson_path=paths.get('geojson_path'),
            seconds=time.perf_counter() - start,
            threshold=self.runtime.mask_threshold)
        return result

    def _gate(self, indices: List[int], text_filter: tuple) -> List[int]:
        """The windows of ``indices`` whose global text filter reaches
        :attr:`filter_gate` (only their patch features are read, 64
        windows at a time)."""
        kept = []
        for start in range(0, len(indices), 64):
            feats = [(i, self.embeddings.get(i, ('img_feats', )))
                     for i in indices[start:start + 64]]
            feats = [(i, e) for i, e in feats if e is not None]
            if feats:
                scores = window_filter_max([e for _, e in feats], *text_filter)
                kept += [
                    i for (i, _), score in zip(feats, scores)
                    if score >= self.filter_gate
                ]
        return kept

    def _check_flips(self, text: str, probs: dict,
                     presence: np.ndarray) -> None:
        """The :attr:`flip_check` views of the windows of ``probs`` (index
        -> (h, w) probability, None below the threshold) that pass:
        ``presence`` becomes the least of the views', ``probs`` their
        mean, or None where a view falls below the threshold."""
        kept = [i for i, prob in probs.items() if prob is not None]
        if not kept:
            return
        boxes = self.grid.boxes
        windows = [self.reader.read(boxes[i]) for i in kept]
        shape = windows[0].img.shape[:2]
        total = {i: probs[i].astype(np.float32) for i in kept}
        for direction in self.flip_check:
            flipped = [
                dataclasses.replace(
                    w,
                    img=flip_array(w.img, direction),
                    nodata_mask=None if w.nodata_mask is None else flip_array(
                        w.nodata_mask, direction)) for w in windows
            ]
            out, pres = self.runtime.decode_windows(
                self.runtime.encode_windows(flipped), shape,
                flip_referring_text(text, direction))
            for k, i in enumerate(kept):
                presence[i] = min(presence[i], pres[k])
                if total.get(i) is None or out[k] is None or \
                        pres[k] < self.presence_threshold:
                    total[i] = None
                else:
                    total[i] += flip_array(out[k], direction)
        views = 1 + len(self.flip_check)
        for i in kept:
            probs[i] = None if total[i] is None else total[i] / views

    def _write_presence(self, path: str, grid: np.ndarray, text: str) -> str:
        """The coarse presence raster as a float32 GeoTIFF (NaN: no
        data), its pixels ``stride`` scene pixels wide."""
        rasterio = require_rasterio(path)
        from affine import Affine
        from rasterio.errors import NotGeoreferencedWarning
        sh, sw = self.grid.stride
        transform = (self.reader.transform or Affine.identity()) @ \
            Affine.scale(sw, sh)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(
                    path,
                    'w',
                    driver='GTiff',
                    width=grid.shape[1],
                    height=grid.shape[0],
                    count=1,
                    dtype='float32',
                    crs=self.reader.crs,
                    transform=transform,
                    nodata=float('nan'),
                    compress='deflate') as dst:
                dst.write(grid, 1)
                dst.set_band_description(
                    1, 'probability that the referent is in the window')
                dst.update_tags(expression=text)
        return path

    def close(self) -> None:
        """Close the scene (its file; temporary embeddings are deleted,
        an ``embeddings_file`` is kept)."""
        if self.embeddings is not None:
            self.embeddings.close()
            self.embeddings = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.grid = None


def _presence_threshold(runtime: SceneRuntime,
                        threshold: Optional[float]) -> Optional[float]:
    """The checked presence threshold of a scene's windows."""
    model = runtime.presence_threshold
    if threshold is None:
        return runtime.scene_presence_threshold
    if model is None:
        raise ValueError('presence_threshold: the model has no presence '
                         'output')
    if not model <= threshold < 1:
        raise ValueError(
            f'presence_threshold must be in [{model}, 1) (windows below the '
            f"model's presence threshold {model} are not decoded), got "
            f'{threshold}')
    return float(threshold)


def _flip_check(flips: Sequence[str],
                threshold: Optional[float]) -> Tuple[str, ...]:
    """The checked ``flip_check`` of a scene predictor."""
    if isinstance(flips, str):
        flips = (flips, )
    flips = tuple(flips)
    for flip in flips:
        if flip not in FLIP_DIRECTIONS:
            raise ValueError(f'flip_check: each flip must be one of '
                             f'{FLIP_DIRECTIONS}, got {flip!r}')
    if len(set(flips)) != len(flips):
        raise ValueError(f'flip_check: a flip given twice in {flips}')
    if flips and threshold is None:
        raise ValueError('flip_check: the model has no presence output, '
                         'so no window is judged absent and every window '
                         'would be checked; use it with a presence model')
    return flips


def _empty(window: RasterImage) -> bool:
    """Whether a window holds no data at all."""
    return window.nodata_mask is not None and bool(window.nodata_mask.all())
