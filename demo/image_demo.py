"""Segment the object an expression refers to, in your own image(s).

Single image (JPEG / PNG / GeoTIFF / any rasterio-readable file):
    python demo/image_demo.py IMAGE "EXPRESSION" CONFIG CHECKPOINT \
        --out-dir DIR [--device cpu]
Multispectral / 16-bit GeoTIFF, bands 3, 2, 1 as R, G, B, a crop in map
coordinates (the image's CRS; or --roi-crs EPSG:4326 for lon/lat):
    python demo/image_demo.py scene.tif "the white tank" CONFIG CHECKPOINT \
        --out-dir DIR --bands 3 2 1 --roi 500200 4100300 500900 4100900 \
        --roi-crs map
Batch (a .jsonl with {"image": ..., "text": ...} per line, or a .csv with
columns image,text; relative image paths are resolved against the file;
every row is checked first - an empty expression or a missing image is
refused naming its line, before anything is written; rows are grouped by
image and each image is encoded once; a progress bar is drawn on stderr
when it is a terminal):
    python demo/image_demo.py --batch pairs.jsonl CONFIG CHECKPOINT \
        --out-dir DIR

For each pair it writes ``<stem>_mask.png`` (0/255), ``<stem>_overlay.png``
(prediction over the image, captioned with the expression) and
``<stem>_heatmap.png`` (the global text-filter activation); for a
georeferenced input also ``<stem>_mask.tif`` (uint8 GeoTIFF: 1 target,
0 background, 255 nodata, in the input's CRS and transform - the crop's with
--roi) and ``<stem>_mask.geojson`` (the mask's polygons, holes kept, in the
input's CRS). Non-8-bit data is stretched per band (2-98 % by default) and
nodata pixels are never predicted as target.

Rasters (and regions of interest) larger than twice the model's input size
are read decimated to that working size (mean of the valid pixels, from the
file's overviews when it has them), so a 16k x 16k scene needs no more
memory than a small one; the outputs are on that working grid, with its
transform. ``--output-resolution native`` writes ``<stem>_mask.tif`` on the
input file's own grid instead (block by block, memory stays bounded).

Whole scene at the file's resolution (sliding windows read from the file,
encoded once, any number of expressions; memory bounded by the window, not
the scene; docs/large_scenes.md):
    python demo/image_demo.py scene.tif "the white tank" "the road" \
        CONFIG CHECKPOINT --out-dir DIR --bands 3 2 1 --slide \
        [--window 800] [--stride 600] [--embeddings scene.npz]

For each expression it writes ``<stem>_<expression>_mask.tif`` (the input
file's grid), ``..._presence.tif`` (one cell per stride: the highest window
presence), ``..._mask.geojson`` (polygons merged across window seams) and
``..._overview.png`` (the scene, longest side at most 2048 px, with the
mask drawn).
"""
import argparse
import csv
import json
import os.path as osp
from pathlib import Path
from typing import List, Tuple

from mmengine.config import DictAction

from rsrefseg_core.geo import DEFAULT_MIN_AREA_PX, DEFAULT_STRETCH
from rsrefseg_core.scene.cli import (add_scene_arguments,
                                     check_scene_arguments, run_scene)
from rsrefseg_core.text import check_expression
from rsrefseg_core.visualization import FILL_ALPHA
from rsrefseg_mm.apis import (ReferringPredictor, init_referring_model,
                              save_referring_outputs)
from rsrefseg_mm.apis.outputs import OUTPUT_RESOLUTIONS
from rsrefseg_mm.apis.precision import PRECISIONS
from rsrefseg_mm.utils import allow_unsafe_load, track

#: Bad rows of a --batch file listed in the error (all are counted).
MAX_ROW_ERRORS = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'inputs',
        nargs='*',
        help='IMAGE "EXPRESSION" CONFIG CHECKPOINT, or CONFIG CHECKPOINT '
        'with --batch, or IMAGE "EXPRESSION" ["EXPRESSION" ...] CONFIG '
        'CHECKPOINT with --slide')
    parser.add_argument('--batch', help='.jsonl or .csv of (image, text)')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default='fp32',
        help='bf16: autocast to bfloat16, on CPUs with native bf16 '
        '(AVX512-BF16 or AMX) or CUDA devices only (refused elsewhere)')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle the checkpoint without the safe loader\'s '
        'allow-list (torch.load weights_only=False). Pickles can run code: '
        'only for files you trust')
    parser.add_argument(
        '--opacity',
        type=float,
        default=FILL_ALPHA,
        help='opacity of the mask fill in the overlay (the contour is '
        'opaque)')
    parser.add_argument(
        '--bands',
        type=int,
        nargs='+',
        metavar='B',
        help='1-based bands shown as R G B (e.g. --bands 3 2 1), or one band '
        'shown as grey; needed for inputs that are not 3-band RGB')
    stretch = parser.add_mutually_exclusive_group()
    stretch.add_argument(
        '--stretch',
        type=float,
        nargs=2,
        metavar=('LOW', 'HIGH'),
        default=DEFAULT_STRETCH,
        help='percentile stretch of non-8-bit data to 0-255 (default: 2 98)')
    stretch.add_argument(
        '--no-stretch',
        action='store_true',
        help='pass non-8-bit data through unchanged (it must be in 0-255)')
    parser.add_argument(
        '--roi',
        type=float,
        nargs=4,
        metavar=('XMIN', 'YMIN', 'XMAX', 'YMAX'),
        help='region of interest read instead of the whole image: pixels '
        '(COL0 ROW0 COL1 ROW1) or map coordinates (LEFT BOTTOM RIGHT TOP), '
        'see --roi-crs')
    parser.add_argument(
        '--roi-crs',
        default='pixel',
        help="coordinates of --roi: 'pixel' (default), 'map' (the image's "
        "CRS) or a CRS such as EPSG:4326 (longitude / latitude)")
    parser.add_argument(
        '--min-polygon-area',
        type=float,
        default=DEFAULT_MIN_AREA_PX,
        metavar='PX',
        help='polygons smaller than this many pixels are left out of the '
        f'GeoJSON (default {DEFAULT_MIN_AREA_PX:g})')
    parser.add_argument(
        '--output-resolution',
        choices=OUTPUT_RESOLUTIONS,
        help="grid of the mask GeoTIFF of a large raster read decimated: "
        "'working' (default; the grid the model's prediction is on) or "
        "'native' (the input file's pixels, written block by block); "
        "--slide always writes 'native'")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. '
        'model.decode_head.threshold=0.3')
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    refused = {
        '--batch':
        bool(args.batch),
        '--roi (read the region into a file of its own)':
        args.roi is not None,
        "--output-resolution working (it writes the file's grid)":
        args.output_resolution == 'working'
    }
    check_scene_arguments(parser, args, refused)
    args.output_resolution = args.output_resolution or 'working'
    if args.slide:
        if len(args.inputs) < 4:
            parser.error('expected IMAGE "EXPRESSION" ["EXPRESSION" ...] '
                         'CONFIG CHECKPOINT with --slide')
        return args
    n = 2 if args.batch else 4
    if len(args.inputs) != n:
        parser.error('expected IMAGE "EXPRESSION" CONFIG CHECKPOINT' if n ==
                     4 else 'expected CONFIG CHECKPOINT with --batch')
    return args


def read_pairs(path: str) -> List[Tuple[str, str]]:
    """Read (image, text) pairs from a .jsonl or .csv file, every row
    checked before anything is segmented.

    Returns:
        list[tuple[str, str]]: Image paths (relative ones resolved against
        the file's folder) and stripped expressions, in file order.

    Raises:
        ValueError: For a malformed file, or naming each row (``FILE:LINE``)
            whose expression is empty (after the tokenizers' clean-up) or
            whose image is missing.
    """
    base = Path(path).parent
    rows = []  # (line, image, text)
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        item = json.loads(line)
                        rows.append((n, item['image'], item['text']))
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise ValueError(f'{path}:{n}: expected a JSON object '
                                         f'with "image" and "text" ({e})')
    elif path.endswith('.csv'):
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            for row in reader:
                if 'image' not in row or 'text' not in row:
                    raise ValueError(f'{path}: needs columns image,text')
                rows.append((reader.line_num, row['image'], row['text']))
    else:
        raise ValueError(f'--batch expects a .jsonl or .csv file, got {path}')
    pairs, errors = [], []
    for n, image, text in rows:
        try:
            text = check_expression(text, f'{path}:{n}')
            if not isinstance(image, str) or not image:
                raise ValueError(f'{path}:{n}: "image" must be a file path, '
                                 f'got {image!r}')
            image = image if osp.isabs(image) else str(base / image)
            if not osp.isfile(image):
                raise ValueError(f'{path}:{n}: image {image} not found')
        except ValueError as e:
            errors.append(str(e))
            continue
        pairs.append((image, text))
    if errors:
        shown = '\n  '.join(errors[:MAX_ROW_ERRORS])
        more = len(errors) - MAX_ROW_ERRORS
        raise ValueError(f'{len(errors)} of the {len(rows)} rows of {path} '
                         f'cannot be segmented; nothing was written:\n  '
                         f'{shown}' +
                         (f'\n  ... and {more} more' if more > 0 else ''))
    return pairs


def main_slide(args: argparse.Namespace) -> list:
    """``--slide``: the whole scene at the file's resolution."""
    image, *texts, config, checkpoint = args.inputs
    texts = [
        check_expression(t, f'expression {i + 1}') for i, t in enumerate(texts)
    ]
    with allow_unsafe_load(args.unsafe_load):
        model = init_referring_model(
            config,
            checkpoint,
            device=args.device,
            cfg_options=args.cfg_options)
    return run_scene(
        ReferringPredictor(model, precision=args.precision), args, image,
        texts, args.out_dir, args.bands,
        None if args.no_stretch else tuple(args.stretch),
        args.min_polygon_area, args.opacity)


def main(argv=None):
    args = parse_args(argv)
    if args.slide:
        return main_slide(args)
    if args.batch:
        config, checkpoint = args.inputs
        pairs = read_pairs(args.batch)
    else:
        image, text, config, checkpoint = args.inputs
        pairs = [(image, text)]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stretch = None if args.no_stretch else tuple(args.stretch)
    with allow_unsafe_load(args.unsafe_load):
        model = init_referring_model(
            config,
            checkpoint,
            device=args.device,
            cfg_options=args.cfg_options)
    # rows of one image together, in order of first appearance: each image
    # is encoded once, its expressions answered from the cached embeddings
    first = {}
    order = sorted(
        range(len(pairs)), key=lambda i: first.setdefault(pairs[i][0], i))
    predictor = ReferringPredictor(
        model, cache_size=1, precision=args.precision)
    encoded = 0
    for i in track(order, 'image demo', unit='expression'):
        img_path, text = pairs[i]
        image = predictor.set_image(img_path, args.bands, stretch, args.roi,
                                    args.roi_crs)
        if not predictor.from_cache and (image.stretch_ranges
                                         or image.nodata_pixels
                                         or image.georeferenced or image.window
                                         or image.decimated):
            print(image.describe())
        encoded += not predictor.from_cache
        result = predictor.predict(text)
        # in batch mode an image may come with several expressions
        stem = Path(img_path).stem if not args.batch else \
            f'{i:05d}_{Path(img_path).stem}'
        paths = save_referring_outputs(image, result, text, str(out_dir), stem,
                                       args.min_polygon_area, args.opacity,
                                       args.output_resolution,
                                       model.decode_head.threshold)
        n = int(result.pred_sem_seg.data.sum())
        print(f'{img_path}: "{text}" -> {n} px; ' +
              ', '.join(osp.basename(p)
                        for p in paths.values()) + f' in {out_dir}')
    print(f'{len(pairs)} expression(s) on {encoded} image(s) encoded')


if __name__ == '__main__':
    main()
