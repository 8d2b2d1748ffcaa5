"""Large synthetic referring scenes at the training scenes' scale, written
as GeoTIFFs window by window.

A scene of ``size`` x ``size`` pixels is a grid of ``cell`` x ``cell``
blocks (the training image side, 128 px for the demo), each holding
``num_objects`` shapes placed, sized and coloured as
:func:`~.synthetic_scenes.generate_scene` places them in one training
image, on a background drawn like the training background (a grey-brown
luminance field varying over ~1/6 of a cell, a weak tint, pixel noise).
Three colour + shape pairs are kept aside for the expressions, all worded
as the generator words them and checked with its parser
(:func:`~.synthetic_scenes.resolve_expression`):

- ``one``: ``"the red circle"``, one object in one cell;
- ``several``: ``"all the blue squares"``, ``instances`` objects in cells
  two or more cells apart (no window of ``cell`` px holds two of them);
- ``absent``: ``"the green triangle"``, a hard no-target expression of
  :func:`~.synthetic_scenes.no_target_expressions` (its colour and its
  shape are in the scene, never together).

The three pairs have three different colours. Other objects never take
the referents' pairs; with ``referent_colours='exclusive'`` they never take
the referents' colours either, so a model that reads only colours finds
the referents, and the no-target expression tells whether it reads shapes.

The scene is a 3-band (red, green, blue) uint8 GeoTIFF (the training
images' values: no stretch needed) in EPSG:32633 at 0.5 m pixels, 256 x
256 tiles, deflate; each expression's ground truth is a uint8 GeoTIFF (1 on
the referents, 0 elsewhere) on the same grid, and a JSON file lists the
objects (pixel and map centres) and the expressions. Everything is written
one strip of tiles at a time: memory follows the scene's width, not its
area.
"""
import json
import os.path as osp
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rsrefseg_core.geo.native_mask import upsample_bilinear
from .synthetic_scenes import (COLORS, SHAPES, _place_objects, draw_shape,
                               no_target_expressions, plural,
                               resolve_expression)

#: Default side of a cell: the demo model's training images.
CELL = 128
#: Georeference of the scenes: CRS, upper-left corner, pixel size (m).
CRS = 'EPSG:32633'
ORIGIN = (291000.0, 4641000.0)
PIXEL_SIZE = 0.5
#: Rows written at a time (a strip of tiles; even, see :func:`render_block`).
STRIP_ROWS = 256
#: Background control points per cell side (the training images' 6 x 6).
BACKGROUND_POINTS = 6
#: A ``(start, stop)`` range of pixels.
Span = Tuple[int, int]
#: Expression kinds, in the order a scene lists them.
KINDS = ('one', 'several', 'absent')


def _pixel_to_map(col: float, row: float) -> Tuple[float, float]:
    """Map coordinates of the centre of pixel ``(col, row)``."""
    return (ORIGIN[0] + (col + 0.5) * PIXEL_SIZE,
            ORIGIN[1] - (row + 0.5) * PIXEL_SIZE)


def _far_cells(rng: np.random.Generator, cells: Sequence[Tuple[int, int]],
               taken: Sequence[Tuple[int, int]],
               count: int) -> List[Tuple[int, int]]:
    """``count`` distinct cells not in ``taken``, two or more cells apart
    from each other and from ``taken`` where the grid allows it."""
    order = [cells[i] for i in rng.permutation(len(cells))]
    chosen: List[Tuple[int, int]] = []
    for min_gap in (2, 1):
        for c in order:
            if len(chosen) == count:
                break
            if all(
                    max(abs(c[0] - o[0]), abs(c[1] - o[1])) >= min_gap
                    for o in (*taken, *chosen)):
                chosen.append(c)
    if len(chosen) < count:
        raise ValueError(f'a scene of {len(cells)} cells has no room for '
                         f'{count} instances besides {len(taken)} target')
    return chosen


def fill_cells(
    rng: np.random.Generator,
    size: int,
    cell: int,
    num_objects: Tuple[int, int],
    object_size: Tuple[float, float],
    reserved: Collection[Tuple[str, str]] = ()
) -> Tuple[List[dict], Dict[Tuple[int, int], List[int]]]:
    """Objects of every ``cell`` x ``cell`` block of a ``size`` px scene,
    each block placed as :func:`~.synthetic_scenes.generate_scene` places
    one training image; an object that draws a ``reserved`` (colour,
    shape) pair takes another pair at random.

    Returns:
        tuple: The objects (scene pixel centres ``cx``, ``cy``) and, per
        cell ``(gy, gx)`` in row-major order, the indices of its objects.
    """
    allowed = [(c, s) for c in COLORS for s in SHAPES
               if (c, s) not in reserved]
    objects: List[dict] = []
    by_cell: Dict[Tuple[int, int], List[int]] = {}
    for gy in range(size // cell):
        for gx in range(size // cell):
            num = int(rng.integers(num_objects[0], num_objects[1] + 1))
            placed: List[dict] = []
            while len(placed) < num:  # as generate_scene: retry if crowded
                placed = _place_objects(rng, num, cell, object_size)
            by_cell[gy, gx] = []
            for obj in placed:
                if (obj['color'], obj['shape']) in reserved:
                    obj['color'], obj['shape'] = allowed[rng.integers(
                        len(allowed))]
                obj['cx'] += gx * cell
                obj['cy'] += gy * cell
                by_cell[gy, gx].append(len(objects))
                objects.append(obj)
    return objects, by_cell


def generate_large_scene(seed: int,
                         size: int,
                         cell: int = CELL,
                         num_objects: Tuple[int, int] = (3, 4),
                         object_size: Tuple[float, float] = (0.15, 0.35),
                         instances: int = 3,
                         referent_colours: str = 'shared') -> Dict:
    """Sample a large scene and its three expressions (module docstring).

    Args:
        seed (int): The scene depends on ``(seed, size, cell)`` only.
        size (int): Scene side in pixels (at least two cells).
        cell (int): Cell side in pixels (the training image side).
        num_objects (tuple[int, int]): Inclusive range of objects per cell.
        object_size (tuple[float, float]): Object side / diameter as a
            fraction of ``cell``.
        instances (int): Referents of the ``several`` expression (>= 2).
        referent_colours (str): ``'shared'``: other objects may have the
            colour (or the shape) of a referent, as in the training scenes;
            ``'exclusive'``: the colours of the ``one`` and ``several``
            referents are theirs alone (other objects share only shapes).

    Returns:
        dict: ``size``, ``cell``, ``objects`` (dicts of
        :func:`~.synthetic_scenes.generate_scene` with scene pixel centres
        ``cx``, ``cy`` and map centres ``x``, ``y``), ``expressions``
        (``text``, ``kind``, ``type``, ``targets``), ``texture_seed``.

    Raises:
        ValueError: For a scene too small for its referents.
    """
    if size < 2 * cell or instances < 2:
        raise ValueError(f'a large scene needs size >= 2 * cell and '
                         f'instances >= 2, got size {size}, cell {cell}, '
                         f'instances {instances}')
    if referent_colours not in ('shared', 'exclusive'):
        raise ValueError("referent_colours must be 'shared' or 'exclusive', "
                         f'got {referent_colours!r}')
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, cell]))
    # three pairs of three different colours
    colours = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:3]]
    reserved = {
        kind: (colour, SHAPES[rng.integers(len(SHAPES))])
        for kind, colour in zip(KINDS, colours)
    }
    kept = set(reserved.values()) if referent_colours == 'shared' else \
        {(c, s) for c in colours[:2] for s in SHAPES} | {reserved['absent']}
    objects, by_cell = fill_cells(rng, size, cell, num_objects, object_size,
                                  kept)
    cells = list(by_cell)
    one = _far_cells(rng, cells, [], 1)
    several = _far_cells(rng, cells, one, instances)
    for kind, chosen in (('one', one), ('several', several)):
        for c in chosen:
            obj = objects[by_cell[c][rng.integers(len(by_cell[c]))]]
            obj['color'], obj['shape'] = reserved[kind]
    for obj in objects:
        obj['x'], obj['y'] = _pixel_to_map(obj['cx'], obj['cy'])
    # the kept-aside pair is a hard no-target expression where the scene
    # holds its colour and its shape (a large one does), else another one
    hard = sorted(c['text'] for c in no_target_expressions(objects)
                  if c['hard'])
    absent = 'the {} {}'.format(*reserved['absent'])
    if absent not in hard:
        if not hard:
            raise RuntimeError(f'scene {seed} ({size} px) has no hard '
                               'no-target expression')
        absent = hard[rng.integers(len(hard))]
    texts = dict(
        one='the {} {}'.format(*reserved['one']),
        several='all the {} {}'.format(reserved['several'][0],
                                       plural(reserved['several'][1])),
        absent=absent)
    expressions = []
    for kind in KINDS:
        targets = resolve_expression(texts[kind], objects)
        want = {'one': 1, 'several': instances, 'absent': 0}[kind]
        if len(targets) != want:
            raise RuntimeError(f'scene {seed} ({size} px): {texts[kind]!r} '
                               f'refers to {len(targets)} objects, expected '
                               f'{want}')
        expressions.append(
            dict(
                text=texts[kind],
                kind=kind,
                type={
                    'one': 'attribute',
                    'several': 'multi',
                    'absent': 'none'
                }[kind],
                targets=[int(t) for t in targets]))
    return dict(
        size=int(size),
        cell=int(cell),
        seed=int(seed),
        objects=objects,
        expressions=expressions,
        texture_seed=int(rng.integers(2**31 - 1)))


def scene_background(scene: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """Luminance control points ((n, n) float32) and the RGB tint."""
    rng = np.random.default_rng(scene['texture_seed'])
    points = -(-scene['size'] * BACKGROUND_POINTS // scene['cell'])
    lum = rng.uniform(60, 125, size=(points, points)).astype(np.float32)
    tint = rng.uniform(-8, 8, size=3) + np.array([-6, 10, 4])  # BGR
    return lum, tint[::-1].astype(np.float32)  # RGB


def render_block(scene: Dict,
                 row: int,
                 stop: int,
                 lum: np.ndarray,
                 tint: np.ndarray,
                 cols: Optional[Span] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Rows ``row:stop`` (and columns ``cols``, default all) of the scene:
    (3, h, w) uint8 RGB and the (h, w) int32 object labels (index + 1, 0
    on the background).

    Objects are drawn with :func:`~.synthetic_scenes.draw_shape` shifted by
    ``row`` (and the first column); with even shifts the labels are those
    of a drawing of the whole scene.
    """
    size = scene['size']
    col, col_stop = cols or (0, size)
    h, w = stop - row, col_stop - col
    seed = [scene['texture_seed'], row] + ([col] if cols else [])
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    field = upsample_bilinear(lum, (row, stop), (col, col_stop), (size, size))
    img = field[None] + tint[:, None, None]
    img += rng.normal(0, 10, size=img.shape).astype(np.float32)
    # drawn with an even margin wider than any drawn shape: OpenCV
    # rasterises a shape cut by the canvas border differently from the
    # same shape inside it
    pad = 2 * int(
        np.ceil(max((o['size'] for o in scene['objects']), default=0) + 2))
    labels = np.zeros((h + 2 * pad, w + 2 * pad), np.int32)
    for i, obj in enumerate(scene['objects']):
        reach = obj['size'] + 2
        if obj['cy'] + reach < row or obj['cy'] - reach >= stop or \
                obj['cx'] + reach < col or obj['cx'] - reach >= col_stop:
            continue
        draw_shape(
            labels,
            dict(obj, cy=obj['cy'] - row + pad, cx=obj['cx'] - col + pad),
            i + 1)
    labels = labels[pad:pad + h, pad:pad + w]
    for i in np.unique(labels[labels > 0]) - 1:
        obj = scene['objects'][i]
        inside = labels == i + 1
        rgb = np.clip(np.array(COLORS[obj['color']]) + obj['jitter'], 0, 255)
        noise = rng.normal(0, 6, size=(int(inside.sum()), 3))
        img[:, inside] = (rgb + noise).T
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


def _profile(size: int, count: int) -> dict:
    from rasterio.transform import from_origin
    return dict(
        driver='GTiff',
        width=size,
        height=size,
        count=count,
        dtype='uint8',
        crs=CRS,
        transform=from_origin(*ORIGIN, PIXEL_SIZE, PIXEL_SIZE),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress='deflate')


def write_large_scene(scene: Dict, out_dir: str, stem: str) -> Dict:
    """Write a scene of :func:`generate_large_scene` strip by strip.

    Files: ``<stem>.tif`` (the image), ``<stem>_gt<k>.tif`` (the ground
    truth of expression ``k``) and ``<stem>.json`` (the scene with the file
    paths: ``path``, and ``gt_path`` in every expression).

    Args:
        scene (dict): From :func:`generate_large_scene`.
        out_dir (str): Existing output folder.
        stem (str): File name stem.

    Returns:
        dict: The scene as written to the JSON file.
    """
    import rasterio
    from rasterio.windows import Window
    size = scene['size']
    scene = dict(scene, path=osp.join(out_dir, f'{stem}.tif'))
    scene['expressions'] = [
        dict(e, gt_path=osp.join(out_dir, f'{stem}_gt{k}.tif'))
        for k, e in enumerate(scene['expressions'])
    ]
    lum, tint = scene_background(scene)
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), \
            rasterio.open(scene['path'], 'w', **_profile(size, 3)) as dst:
        for i, name in enumerate(('red', 'green', 'blue'), 1):
            dst.set_band_description(i, name)
        gts = [
            rasterio.open(e['gt_path'], 'w', **_profile(size, 1))
            for e in scene['expressions']
        ]
        try:
            for row in range(0, size, STRIP_ROWS):
                stop = min(row + STRIP_ROWS, size)
                img, labels = render_block(scene, row, stop, lum, tint)
                window = Window(0, row, size, stop - row)
                dst.write(img, window=window)
                for gt, expr in zip(gts, scene['expressions']):
                    mask = np.isin(labels, np.asarray(expr['targets']) + 1)
                    gt.write(mask.astype(np.uint8)[None], window=window)
        finally:
            for gt, expr in zip(gts, scene['expressions']):
                gt.update_tags(expression=expr['text'])
                gt.close()
    with open(osp.join(out_dir, f'{stem}.json'), 'w') as f:
        json.dump(scene, f)
    return scene
