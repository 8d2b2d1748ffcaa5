"""Synthetic referring scenes: shapes, expressions, drawing.

Every scene holds several coloured shapes on a noisy textured background and
one expression that singles out a target object; the ground truth is that
object's mask. The scenes are built so that the target cannot be found
without reading the expression: other objects share its colour or its shape,
and relational expressions ("the leftmost circle", "the largest red object")
are only used where the attribute alone is ambiguous.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Colour vocabulary: name -> RGB.
COLORS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40),
    'green': (40, 190, 60),
    'blue': (40, 80, 235),
    'yellow': (235, 215, 40),
    'purple': (150, 50, 205),
    'white': (245, 245, 245),
}
#: Shape vocabulary.
SHAPES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'cross')
#: Expression types (see :class:`SyntheticReferringDataset`).
EXPRESSION_TYPES = ('attribute', 'position', 'size')
#: Relational words: name -> (axis, sign); axis 0 = x, 1 = y.
POSITIONS = {
    'leftmost': (0, -1),
    'rightmost': (0, 1),
    'topmost': (1, -1),
    'bottommost': (1, 1),
}
SPLIT_CODES = {'train': 0, 'val': 1, 'test': 2}


# --------------------------------------------------------------- geometry
def shape_polygon(shape: str, cx: float, cy: float, size: float,
                  angle: float) -> Optional[np.ndarray]:
    """Vertices (N, 2) of a polygonal shape, or None for a circle.

    ``size`` is the side / diameter in pixels; the shape fits in a circle of
    radius ``size / sqrt(2)`` around (cx, cy).
    """
    half = size / 2.0
    if shape == 'circle':
        return None
    if shape == 'square':
        pts = np.array([[-half, -half], [half, -half], [half, half],
                        [-half, half]])
    elif shape == 'triangle':
        r = size / np.sqrt(3) * 1.15  # circumradius, slightly enlarged
        ang = np.deg2rad([-90, 30, 150])
        pts = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)
    elif shape == 'cross':
        t = size / 6.0  # half arm thickness
        pts = np.array([[-t, -half], [t, -half], [t, -t], [half, -t],
                        [half, t], [t, t], [t, half], [-t, half], [-t, t],
                        [-half, t], [-half, -t], [-t, -t]])
    else:
        raise ValueError(f'unknown shape {shape!r}')
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.array([cx, cy])


def draw_shape(canvas: np.ndarray, obj: dict, value) -> None:
    """Fill ``obj`` (dict with shape, cx, cy, size, angle) into ``canvas``."""
    if obj['shape'] == 'circle':
        cv2.circle(
            canvas, (int(round(obj['cx'])), int(round(obj['cy']))),
            int(round(obj['size'] / 2.0)),
            value,
            thickness=-1,
            lineType=cv2.LINE_8)
    else:
        pts = shape_polygon(obj['shape'], obj['cx'], obj['cy'], obj['size'],
                            obj['angle'])
        cv2.fillPoly(
            canvas, [np.round(pts).astype(np.int32)],
            value,
            lineType=cv2.LINE_8)


def object_mask(obj: dict, img_size: int) -> np.ndarray:
    """(H, W) uint8 {0, 1} mask of one object."""
    mask = np.zeros((img_size, img_size), np.uint8)
    draw_shape(mask, obj, 1)
    return mask


# ------------------------------------------------------------ expressions
def _describe(kind: str, obj: dict) -> str:
    if kind == 'color':
        return f'{obj["color"]} object'
    if kind == 'shape':
        return obj['shape']
    if kind == 'color_shape':
        return f'{obj["color"]} {obj["shape"]}'
    return 'object'


def _matches(kind: str, obj: dict, ref: dict) -> bool:
    if kind == 'color':
        return obj['color'] == ref['color']
    if kind == 'shape':
        return obj['shape'] == ref['shape']
    if kind == 'color_shape':
        return (obj['color'], obj['shape']) == (ref['color'], ref['shape'])
    return True


def candidate_expressions(objects: Sequence[dict],
                          img_size: int,
                          position_margin: float = 0.08,
                          size_ratio: float = 1.3) -> List[dict]:
    """Every expression that refers to exactly one object of a scene.

    - ``attribute``: ``the <color> object`` / ``the <shape>`` /
      ``the <color> <shape>`` when that attribute set is unique, and another
      object shares the target's colour or shape (so one word alone is not
      enough to guess the target);
    - ``position``: ``the leftmost|rightmost|topmost|bottommost <group>``
      among >= 2 objects of the group, extreme by ``position_margin`` of the
      image side;
    - ``size``: ``the largest|smallest <group>`` among >= 2 objects, larger
      (smaller) than all others by ``size_ratio``.

    ``<group>`` is ``object``, ``<color> object``, ``<shape>`` or
    ``<color> <shape>``.

    Args:
        objects (Sequence[dict]): Scene objects (shape, color, cx, cy, size).
        img_size (int): Image side in pixels.
        position_margin (float): Required gap (fraction of the side).
        size_ratio (float): Required size ratio.

    Returns:
        list[dict]: ``dict(text, target, type)`` candidates.
    """
    out = []
    n = len(objects)
    for i, obj in enumerate(objects):
        shares = any(o['color'] == obj['color'] or o['shape'] == obj['shape']
                     for j, o in enumerate(objects) if j != i)
        for kind in ('color', 'shape', 'color_shape', 'any'):
            group = [j for j in range(n) if _matches(kind, objects[j], obj)]
            desc = _describe(kind, obj)
            if len(group) == 1:
                if kind != 'any' and shares:
                    out.append(
                        dict(text=f'the {desc}', target=i, type='attribute'))
                continue
            others = [j for j in group if j != i]
            for word, (axis, sign) in POSITIONS.items():
                key = 'cx' if axis == 0 else 'cy'
                gap = min(sign * (obj[key] - objects[j][key]) for j in others)
                if gap >= position_margin * img_size:
                    out.append(
                        dict(
                            text=f'the {word} {desc}',
                            target=i,
                            type='position'))
            if all(obj['size'] >= size_ratio * objects[j]['size']
                   for j in others):
                out.append(
                    dict(text=f'the largest {desc}', target=i, type='size'))
            if all(objects[j]['size'] >= size_ratio * obj['size']
                   for j in others):
                out.append(
                    dict(text=f'the smallest {desc}', target=i, type='size'))
    return out


def resolve_expression(text: str, objects: Sequence[dict]) -> List[int]:
    """Indices of the objects an expression refers to (independent parser).

    Used by tests and sanity checks: parses ``the [relation] [color]
    [shape|object]`` and applies it to the scene.

    Args:
        text (str): Expression produced by :func:`candidate_expressions`.
        objects (Sequence[dict]): Scene objects.

    Returns:
        list[int]: Indices of all objects that satisfy the expression (a
        well-formed expression gives exactly one).
    """
    words = text.split()
    if not words or words[0] != 'the':
        raise ValueError(f'cannot parse expression {text!r}')
    words = words[1:]
    relation = None
    if words and (words[0] in POSITIONS
                  or words[0] in ('largest', 'smallest')):
        relation = words.pop(0)
    color = words.pop(0) if words and words[0] in COLORS else None
    if len(words) != 1 or words[0] not in SHAPES + ('object', ):
        raise ValueError(f'cannot parse expression {text!r}')
    shape = None if words[0] == 'object' else words[0]
    group = [
        i for i, o in enumerate(objects)
        if (color is None or o['color'] == color) and (
            shape is None or o['shape'] == shape)
    ]
    if relation is None or not group:
        return group
    if relation in POSITIONS:
        axis, sign = POSITIONS[relation]
        key = 'cx' if axis == 0 else 'cy'
        best = max(sign * objects[i][key] for i in group)
        return [i for i in group if sign * objects[i][key] == best]
    sizes = [objects[i]['size'] for i in group]
    best = max(sizes) if relation == 'largest' else min(sizes)
    return [i for i in group if objects[i]['size'] == best]


# ---------------------------------------------------------------- scenes
def _place_objects(rng: np.random.Generator, num: int, img_size: int,
                   size_range: Tuple[float, float]) -> List[dict]:
    """Sample non-overlapping objects; attributes reuse earlier ones often
    so that objects share colours and shapes."""
    colors, shapes = list(COLORS), list(SHAPES)
    objects: List[dict] = []
    for k in range(num):
        if k > 0 and rng.random() < 0.6:
            ref = objects[rng.integers(len(objects))]
            if rng.random() < 0.5:
                color, shape = ref['color'], shapes[rng.integers(len(shapes))]
            else:
                color, shape = colors[rng.integers(len(colors))], ref['shape']
        else:
            color = colors[rng.integers(len(colors))]
            shape = shapes[rng.integers(len(shapes))]
        lo, hi = size_range
        for attempt in range(200):
            scale = 1.0 - 0.5 * attempt / 200  # shrink when crowded
            size = rng.uniform(lo, hi) * img_size * max(scale, lo / hi)
            radius = size / np.sqrt(2) * 1.1 + 1
            cx = rng.uniform(radius, img_size - radius)
            cy = rng.uniform(radius, img_size - radius)
            ok = all(
                np.hypot(cx - o['cx'], cy - o['cy']) > radius +
                o['size'] / np.sqrt(2) * 1.1 + 2 for o in objects)
            if ok:
                break
        else:
            return objects  # could not place: caller retries the scene
        objects.append(
            dict(
                shape=shape,
                color=color,
                cx=float(cx),
                cy=float(cy),
                size=float(size),
                angle=float(rng.uniform(-20, 20)),
                jitter=[int(v) for v in rng.integers(-12, 13, size=3)]))
    return objects


def generate_scene(rng: np.random.Generator,
                   img_size: int,
                   num_objects: Tuple[int, int],
                   size_range: Tuple[float, float],
                   expression_types: Sequence[str],
                   max_tries: int = 100) -> dict:
    """Sample one scene with a uniquely-referring expression.

    Returns:
        dict: ``objects`` (list of dict), ``target`` (int), ``text`` (str),
        ``expr_type`` (str) and ``texture_seed`` (int).
    """
    for _ in range(max_tries):
        num = int(rng.integers(num_objects[0], num_objects[1] + 1))
        objects = _place_objects(rng, num, img_size, size_range)
        if len(objects) < num:
            continue
        cands = [
            c for c in candidate_expressions(objects, img_size)
            if c['type'] in expression_types
        ]
        if not cands:
            continue
        types = sorted({c['type'] for c in cands})
        etype = types[rng.integers(len(types))]
        pool = [c for c in cands if c['type'] == etype]
        choice = pool[rng.integers(len(pool))]
        return dict(
            objects=objects,
            target=int(choice['target']),
            text=choice['text'],
            expr_type=etype,
            texture_seed=int(rng.integers(2**31 - 1)))
    raise RuntimeError(
        f'could not generate a scene with {num_objects} objects of relative '
        f'size {size_range} at {img_size}px after {max_tries} tries; use '
        'fewer or smaller objects')


def render_scene(scene: dict, img_size: int) -> Tuple[np.ndarray, List]:
    """Render a scene to a BGR image and per-object masks.

    Args:
        scene (dict): From :func:`generate_scene`.
        img_size (int): Image side.

    Returns:
        tuple: (H, W, 3) BGR uint8 image and a list of (H, W) uint8 masks.
    """
    rng = np.random.default_rng(scene['texture_seed'])
    # textured background: low-frequency colour field + pixel noise
    # (a grey-brown luminance field with a weak per-image tint, so that no
    # background region looks like one of the object colours)
    lum = rng.uniform(60, 125, size=(6, 6)).astype(np.float32)
    lum = cv2.resize(lum, (img_size, img_size), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(-8, 8, size=3) + np.array([-6, 10, 4])  # BGR
    img = lum[..., None] + tint.astype(np.float32)[None, None]
    img += rng.normal(0, 10, size=img.shape).astype(np.float32)
    masks = []
    for obj in scene['objects']:
        mask = object_mask(obj, img_size)
        rgb = np.clip(np.array(COLORS[obj['color']]) + obj['jitter'], 0, 255)
        fill = rgb[::-1].astype(np.float32)  # BGR
        noise = rng.normal(0, 6, size=(int(mask.sum()), 3))
        img[mask.astype(bool)] = fill + noise
        masks.append(mask)
    return np.clip(img, 0, 255).astype(np.uint8), masks
