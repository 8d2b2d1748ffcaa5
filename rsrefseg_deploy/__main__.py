"""Segment what expressions refer to in an image with ONNX Runtime.

    python -m rsrefseg_deploy IMAGE "EXPRESSION" ["EXPRESSION" ...] \
        --model-dir DIR --out-dir OUT [--bands 3 2 1] [--roi ...]

DIR is what ``tools/deployment/export_onnx.py`` wrote. The image is encoded
once and every expression answered on it; the outputs are those of
``demo/image_demo.py``: ``<stem>_mask.png``, ``<stem>_overlay.png``,
``<stem>_heatmap.png`` and, for a georeferenced input, ``<stem>_mask.tif``
(+ ``.qml``) and ``<stem>_mask.geojson``. For a model with a presence
output, each expression's line also gives its presence probability, and
``absent`` when it is below the model's presence threshold (empty mask).

Whole scene at the file's resolution (sliding windows read from the file,
encoded once; the options of ``demo/image_demo.py --slide``)::

    python -m rsrefseg_deploy scene.tif "EXPRESSION" ["EXPRESSION" ...] \
        --model-dir DIR --out-dir OUT --slide [--window 800] \
        [--stride 600] [--embeddings scene.npz]

writes ``<stem>_<expression>_mask.tif`` on the file's grid,
``_presence.tif``, ``_mask.geojson`` and ``_overview.png`` per expression.
"""
import argparse
import time
from pathlib import Path

from rsrefseg_core.geo import DEFAULT_MIN_AREA_PX, DEFAULT_STRETCH
from rsrefseg_core.outputs import OUTPUT_RESOLUTIONS, save_outputs
from rsrefseg_core.scene.cli import (add_scene_arguments,
                                     check_scene_arguments, run_scene)
from rsrefseg_core.text import check_expression
from rsrefseg_core.visualization import FILL_ALPHA
from .predictor import OnnxReferringPredictor


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m rsrefseg_deploy', description=__doc__.split('\n')[0])
    parser.add_argument(
        'image', help='JPEG / PNG / GeoTIFF / any '
        'rasterio-readable file')
    parser.add_argument('texts', nargs='+', metavar='EXPRESSION')
    parser.add_argument(
        '--model-dir', required=True, help='folder written by export_onnx.py')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument(
        '--bands',
        type=int,
        nargs='+',
        metavar='B',
        help='1-based bands shown as R G B (or one band)')
    stretch = parser.add_mutually_exclusive_group()
    stretch.add_argument(
        '--stretch',
        type=float,
        nargs=2,
        metavar=('LOW', 'HIGH'),
        default=DEFAULT_STRETCH,
        help='percentile stretch of non-8-bit data '
        '(default: 2 98)')
    stretch.add_argument(
        '--no-stretch',
        action='store_true',
        help='pass non-8-bit data through (0-255)')
    parser.add_argument(
        '--roi',
        type=float,
        nargs=4,
        metavar=('XMIN', 'YMIN', 'XMAX', 'YMAX'),
        help='region of interest (see --roi-crs)')
    parser.add_argument(
        '--roi-crs',
        default='pixel',
        help="'pixel', 'map' or a CRS such as EPSG:4326")
    parser.add_argument(
        '--output-resolution',
        choices=OUTPUT_RESOLUTIONS,
        help="grid of the mask GeoTIFF for decimated reads (default "
        "'working'; --slide always writes 'native')")
    parser.add_argument('--opacity', type=float, default=FILL_ALPHA)
    parser.add_argument(
        '--min-polygon-area',
        type=float,
        default=DEFAULT_MIN_AREA_PX,
        metavar='PX')
    parser.add_argument(
        '--threads', type=int, help='ONNX Runtime intra-op threads')
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    check_scene_arguments(
        parser, args, {
            '--roi (read the region into a file of its own)':
            args.roi is not None,
            "--output-resolution working (it writes the file's grid)":
            args.output_resolution == 'working'
        })
    args.output_resolution = args.output_resolution or 'working'
    return args


def presence_note(presence, predictor: OnnxReferringPredictor) -> str:
    """``", presence 0.93"`` (``", absent: presence 0.12 < 0.50"`` below
    the model's presence threshold); empty without a presence output."""
    if presence is None:
        return ''
    threshold = predictor.presence_threshold
    if presence < threshold:
        return f', absent: presence {presence:.2f} < {threshold:.2f}'
    return f', presence {presence:.2f}'


def main(argv=None) -> list:
    args = parse_args(argv)
    if args.slide:
        texts = [
            check_expression(t, f'expression {i + 1}')
            for i, t in enumerate(args.texts)
        ]
        predictor = OnnxReferringPredictor(
            args.model_dir, threads=args.threads)
        return run_scene(predictor, args, args.image, texts, args.out_dir,
                         args.bands,
                         None if args.no_stretch else tuple(args.stretch),
                         args.min_polygon_area, args.opacity)
    predictor = OnnxReferringPredictor(args.model_dir, threads=args.threads)
    start = time.perf_counter()
    image = predictor.set_image(args.image, args.bands,
                                None if args.no_stretch else args.stretch,
                                args.roi, args.roi_crs)
    encoded = time.perf_counter()
    results = predictor.predict(list(args.texts))
    answered = time.perf_counter()
    if image.stretch_ranges or image.nodata_pixels or \
            image.georeferenced or image.window:
        print(image.describe())
    stem = Path(args.image).stem
    written = []
    for i, result in enumerate(results):
        name = stem if len(results) == 1 else f'{stem}_{i}'
        paths = save_outputs(image, result.mask, result.global_map,
                             result.text, args.out_dir, name,
                             args.min_polygon_area, args.opacity,
                             args.output_resolution, result.probability,
                             predictor.threshold)
        written.append(paths)
        print(f'{args.image}: "{result.text}" -> {int(result.mask.sum())} '
              f'px{presence_note(result.presence, predictor)}; ' +
              ', '.join(Path(p).name for p in paths.values()))
    print(f'image encoded in {encoded - start:.2f} s, {len(results)} '
          f'expression(s) answered in {answered - encoded:.2f} s')
    return written


if __name__ == '__main__':
    main()
