"""The ``--slide`` mode of the command-line tools (``demo/image_demo.py``
and ``python -m rsrefseg_deploy``): a whole scene at the file's resolution
through :class:`~rsrefseg_core.scene.ScenePredictor`, with either runtime.

The scene is encoded once, window by window (or its window embeddings
reopened from ``--embeddings``), then every expression is answered on it;
per expression the mask GeoTIFF, the presence GeoTIFF, the GeoJSON and a
small overview PNG are written.
"""
import argparse
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Sequence

import cv2

from ..flip import FLIP_DIRECTIONS
from ..geo import DEFAULT_MIN_AREA_PX, DEFAULT_STRETCH
from ..geo.stretch import StretchType
from ..visualization import FILL_ALPHA
from ..visualization.scene_overview import scene_overview
from . import (DEFAULT_MEMORY_LIMIT, ScenePredictor, SceneResult, SceneRuntime,
               check_window_args)

#: Options that only mean something with ``--slide`` (argparse dests).
SCENE_OPTIONS = ('window', 'stride', 'window_batch', 'embeddings',
                 'max_memory', 'presence_threshold', 'flip_check',
                 'filter_gate')
#: Windows encoded (and decoded) together by default.
DEFAULT_WINDOW_BATCH = 4


class SceneAnswer(NamedTuple):
    """One expression's answer and the files written for it.

    Attributes:
        result (SceneResult): From :meth:`ScenePredictor.predict`.
        overview_path (str): The overview PNG.
        polygons (int): Features of the GeoJSON.
    """
    result: SceneResult
    overview_path: str
    polygons: int

    @property
    def files(self) -> Dict[str, str]:
        """The written files by kind (mask, QGIS style, presence, GeoJSON,
        overview)."""
        mask = self.result.mask_path
        files = dict(mask=mask)
        style = osp.splitext(mask)[0] + '.qml'
        if osp.isfile(style):
            files['qgis_style'] = style
        files.update(
            presence=self.result.presence_path,
            geojson=self.result.geojson_path,
            overview=self.overview_path)
        return files


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--slide`` and its options to a command's parser."""
    group = parser.add_argument_group(
        'whole scene at the file\'s resolution (sliding windows)')
    group.add_argument(
        '--slide',
        action='store_true',
        help='segment the whole scene at the file\'s resolution: windows '
        'read from the file, encoded once, every expression answered on '
        'them; writes <stem>_<expression>_mask.tif on the file\'s grid, '
        '_presence.tif, _mask.geojson and _overview.png')
    group.add_argument(
        '--window',
        type=int,
        nargs='+',
        metavar='N',
        help='window size in the file\'s pixels: N, or H W (default: the '
        'model\'s scene window size, the config\'s scene_window_size)')
    group.add_argument(
        '--stride',
        type=int,
        nargs='+',
        metavar='N',
        help='step between windows: N, or H W (default: 3/4 of the window)')
    group.add_argument(
        '--window-batch',
        type=int,
        metavar='N',
        help=f'windows encoded together (default {DEFAULT_WINDOW_BATCH})')
    group.add_argument(
        '--embeddings',
        metavar='FILE',
        help='keep the window embeddings in FILE (a ZIP of .npy); when it '
        'exists, written for the same scene, model and windows, it is '
        'reopened instead of encoding the scene')
    group.add_argument(
        '--max-memory',
        type=float,
        metavar='MiB',
        help='window embeddings held in memory; beyond, they go to a file '
        f'(default {DEFAULT_MEMORY_LIMIT >> 20})')
    group.add_argument(
        '--presence-threshold',
        type=float,
        metavar='P',
        help='a window whose presence is below P counts nothing (default: '
        'the model\'s scene presence threshold, presence_cfg.'
        'scene_threshold)')
    group.add_argument(
        '--flip-check',
        nargs='+',
        choices=FLIP_DIRECTIONS,
        metavar='FLIP',
        help='a window that passes must pass again flipped (horizontal, '
        'vertical, diagonal; the expression\'s direction words swapped): '
        'its presence is the least of the views\', its probability their '
        'mean. Costs per expression the windows that pass, not the scene')
    group.add_argument(
        '--filter-gate',
        type=float,
        metavar='LOGIT',
        help='decode only the windows whose global text filter (the '
        'prompter\'s s * cos(patch, sentence) + b, its largest logit in the '
        'window) reaches LOGIT; the others count nothing. A follow-up '
        'expression then costs the windows that resemble it, not the scene')


def _size(values: Optional[Sequence[int]], flag: str, parser):
    if values is None:
        return None
    if len(values) not in (1, 2):
        parser.error(f'{flag} takes N or H W, got {len(values)} numbers')
    return values[0] if len(values) == 1 else tuple(values)


def check_scene_arguments(parser: argparse.ArgumentParser,
                          args: argparse.Namespace,
                          refused: Dict[str, bool]) -> None:
    """Refuse scene options without ``--slide``, and options ``--slide``
    does not take (``refused``: flag -> whether it was given).

    Also normalises ``args.window`` / ``args.stride`` to an int or an
    ``(h, w)`` pair and checks them. Errors go through ``parser.error``.
    """
    if not args.slide:
        given = [
            '--' + name.replace('_', '-') for name in SCENE_OPTIONS
            if getattr(args, name) is not None
        ]
        if given:
            parser.error(f'{", ".join(given)}: only with --slide')
        return
    for flag, present in refused.items():
        if present:
            parser.error(f'--slide does not take {flag}')
    args.window = _size(args.window, '--window', parser)
    args.stride = _size(args.stride, '--stride', parser)
    try:
        if args.stride is not None:
            check_window_args(args.window or args.stride, args.stride)
        if args.window is not None:
            check_window_args(args.window, args.stride or 1)
    except ValueError as e:
        parser.error(
            str(e).replace('crop_size',
                           '--window').replace('stride', '--stride'))
    if args.window_batch is not None and args.window_batch < 1:
        parser.error(f'--window-batch must be >= 1, got {args.window_batch}')
    if args.presence_threshold is not None and \
            not 0 < args.presence_threshold < 1:
        parser.error('--presence-threshold must be in (0, 1), got '
                     f'{args.presence_threshold}')
    if args.max_memory is not None and args.max_memory < 0:
        parser.error(f'--max-memory must be >= 0 MiB, got {args.max_memory}')


def scene_predictor(runtime: SceneRuntime,
                    args: argparse.Namespace,
                    progress: Optional[bool] = None) -> ScenePredictor:
    """A :class:`ScenePredictor` with the ``--slide`` options of ``args``
    (checked by :func:`check_scene_arguments`)."""
    memory = DEFAULT_MEMORY_LIMIT if args.max_memory is None else \
        int(args.max_memory * (1 << 20))
    return ScenePredictor(
        runtime,
        crop_size=args.window,
        stride=args.stride,
        window_batch=args.window_batch or DEFAULT_WINDOW_BATCH,
        max_memory=memory,
        progress=progress,
        presence_threshold=args.presence_threshold,
        flip_check=args.flip_check or (),
        filter_gate=args.filter_gate)


def encode_summary(scene: ScenePredictor, reopened: bool) -> str:
    """One line on the windows of the set scene and how long they took,
    e.g. ``12 windows of 800 x 800 px (stride 600 x 600), 12 encoded in
    3.20 s (3.8 windows/s)``."""
    grid = scene.grid
    (ch, cw), (sh, sw) = grid.crop_size, grid.stride
    windows = len(grid)
    line = (f'{grid.width} x {grid.height} px, {windows} '
            f'window{"s" if windows != 1 else ""} of '
            f'{cw} x {ch} px (stride {sw} x {sh}), ')
    seconds = scene.encode_seconds
    if reopened:
        return line + (f'0 encoded: reopened from {scene.embeddings.path} in '
                       f'{seconds:.2f} s')
    encoded = windows - len(scene.embeddings.meta['empty'])
    rate = encoded / seconds if seconds > 0 else float('inf')
    return line + (f'{encoded} encoded in {seconds:.2f} s '
                   f'({rate:.2f} windows/s)')


def set_scene(scene: ScenePredictor,
              image: str,
              bands: Optional[Sequence[int]] = None,
              stretch: StretchType = DEFAULT_STRETCH,
              embeddings: Optional[str] = None,
              name: Optional[str] = None) -> bool:
    """Open and encode ``image`` (or reopen ``embeddings``).

    Returns:
        bool: Whether the window embeddings were reopened from
        ``embeddings`` instead of encoded.
    """
    reopened = embeddings is not None and osp.exists(embeddings)
    scene.set_scene(
        image, bands, stretch, name=name, embeddings_file=embeddings)
    return reopened


def answer_line(answer: SceneAnswer, presence_threshold) -> str:
    """``"the red roof" -> presence 0.93, found, 1234 px, 3 polygon(s) in
    0.52 s``."""
    r = answer.result
    if r.presence is None:
        presence = 'no presence output'
    else:
        presence = f'presence {r.presence:.2f}'
        if presence_threshold is not None and \
                r.presence < presence_threshold:
            presence += f' < {presence_threshold:.2f} in every window'
    found = 'found' if r.found else 'not found'
    return (f'"{r.text}" -> {presence}, {found}, {r.target_pixels} px, '
            f'{answer.polygons} polygon(s) in {r.seconds:.2f} s')


def predict_scene(scene: ScenePredictor,
                  image: str,
                  texts: Sequence[str],
                  out_dir: str,
                  stem: Optional[str] = None,
                  bands: Optional[Sequence[int]] = None,
                  stretch: StretchType = DEFAULT_STRETCH,
                  min_area_px: float = DEFAULT_MIN_AREA_PX,
                  opacity: float = FILL_ALPHA) -> List[SceneAnswer]:
    """Answer every expression on the set scene (the file ``image``) and
    draw each overview (``<stem>_<expression>_overview.png``).

    Returns:
        list[SceneAnswer]: One per expression, in order.
    """
    results = scene.predict(
        list(texts), out_dir=out_dir, min_area_px=min_area_px, stem=stem)
    answers = []
    for result in results:
        base = result.mask_path[:-len('_mask.tif')]
        overview = scene_overview(
            image,
            result.mask_path,
            result.text,
            bands,
            stretch,
            alpha=opacity)
        path = base + '_overview.png'
        if not cv2.imwrite(path, overview[..., ::-1]):
            raise OSError(f'cannot write {path}')
        answers.append(
            SceneAnswer(result, path, len(result.geojson['features'])))
    return answers


def run_scene(runtime: SceneRuntime,
              args: argparse.Namespace,
              image: str,
              texts: Sequence[str],
              out_dir: str,
              bands: Optional[Sequence[int]] = None,
              stretch: StretchType = DEFAULT_STRETCH,
              min_area_px: float = DEFAULT_MIN_AREA_PX,
              opacity: float = FILL_ALPHA) -> List[SceneAnswer]:
    """``--slide``: encode ``image`` once, answer ``texts``, print a line
    on the encoding and one per expression.

    Returns:
        list[SceneAnswer]: One per expression.
    """
    scene = scene_predictor(runtime, args)
    try:
        reopened = set_scene(scene, image, bands, stretch, args.embeddings)
        print(f'{image}: {encode_summary(scene, reopened)}', flush=True)
        answers = predict_scene(scene, image, texts, out_dir, None, bands,
                                stretch, min_area_px, opacity)
    finally:
        scene.close()
    threshold = scene.presence_threshold
    for answer in answers:
        print(f'{image}: {answer_line(answer, threshold)}; ' +
              ', '.join(osp.basename(p)
                        for p in answer.files.values()) + f' in {out_dir}')
    return answers
