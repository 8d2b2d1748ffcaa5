"""Synthetic referring scenes: shapes, expressions, drawing.

Every scene holds several coloured shapes on a noisy textured background and
one expression that singles out a target object; the ground truth is that
object's mask. The scenes are built so that the target cannot be found
without reading the expression: other objects share its colour or its shape,
and relational expressions ("the leftmost circle", "the largest red object")
are only used where the attribute alone is ambiguous.

Generalized referring adds two kinds: ``multi`` expressions refer to every
object of a group ("all the red objects", "all the circles"), ``none``
expressions to an object that is not in the scene, worded like the
attribute expressions ("the green triangle" where there is none; mostly
with the colour or the shape present, so that both words must be read).
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
#: Generalized referring: several targets, no target.
MULTI_TARGET, NO_TARGET = 'multi', 'none'
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


def plural(noun: str) -> str:
    """English plural of a shape noun (``cross`` -> ``crosses``)."""
    return noun + ('es' if noun.endswith(('s', 'x', 'sh', 'ch')) else 's')


#: Plural noun -> singular, for the parser.
SINGULAR = {plural(n): n for n in SHAPES + ('object', )}


def _plural(kind: str, color: str, shape: str) -> str:
    if kind == 'color':
        return f'all the {color} objects'
    if kind == 'shape':
        return f'all the {plural(shape)}'
    return f'all the {color} {plural(shape)}'


def multi_target_expressions(objects: Sequence[dict]) -> List[dict]:
    """``all the <color> objects`` / ``all the <shapes>`` / ``all the
    <color> <shapes>`` for every such group of two or more objects.

    Returns:
        list[dict]: ``dict(text, targets, type='multi')``.
    """
    out, seen = [], set()
    for obj in objects:
        for kind in ('color', 'shape', 'color_shape'):
            text = _plural(kind, obj['color'], obj['shape'])
            group = [
                j for j, o in enumerate(objects) if _matches(kind, o, obj)
            ]
            if len(group) >= 2 and text not in seen:
                seen.add(text)
                out.append(dict(text=text, targets=group, type=MULTI_TARGET))
    return out


def no_target_expressions(objects: Sequence[dict]) -> List[dict]:
    """Attribute expressions that refer to nothing in the scene.

    ``hard`` ones name a colour and a shape that both occur in the scene,
    never together ("the red square" beside a red circle and a blue
    square); the others an absent colour or shape.

    Returns:
        list[dict]: ``dict(text, targets=[], type='none', hard)``.
    """
    colors = {o['color'] for o in objects}
    shapes = {o['shape'] for o in objects}
    pairs = {(o['color'], o['shape']) for o in objects}
    out = []
    for color in COLORS:
        if color not in colors:
            out.append(dict(text=f'the {color} object', hard=False))
        for shape in SHAPES:
            if (color, shape) not in pairs:
                hard = color in colors and shape in shapes
                out.append(dict(text=f'the {color} {shape}', hard=hard))
    out += [
        dict(text=f'the {shape}', hard=False) for shape in SHAPES
        if shape not in shapes
    ]
    for c in out:
        c.update(targets=[], type=NO_TARGET)
    return out


def resolve_expression(text: str, objects: Sequence[dict]) -> List[int]:
    """Indices of the objects an expression refers to (independent parser).

    Used by tests and sanity checks: parses ``the [relation] [color]
    [shape|object]`` and ``all the [color] shapes|objects`` and applies it
    to the scene.

    Args:
        text (str): Expression produced by :func:`candidate_expressions`.
        objects (Sequence[dict]): Scene objects.

    Returns:
        list[int]: Indices of all objects that satisfy the expression (a
        well-formed singular expression gives one or none).
    """
    words = text.split()
    plural = words[:2] == ['all', 'the']
    if plural:
        words = words[1:]
        noun = words[-1] if words else ''
        if noun not in SINGULAR:
            raise ValueError(f'cannot parse expression {text!r}')
        words[-1] = SINGULAR[noun]
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
    if plural and relation is not None:
        raise ValueError(f'cannot parse expression {text!r}')
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
                   max_tries: int = 100,
                   no_target_ratio: float = 0.0,
                   multi_target_ratio: float = 0.0) -> dict:
    """Sample one scene and its expression.

    With probability ``no_target_ratio`` the expression refers to nothing
    in the scene (:func:`no_target_expressions`, a hard one 3 times in 4
    when the scene has one), with ``multi_target_ratio`` to a group of two
    or more (:func:`multi_target_expressions`, where the scene has one);
    otherwise to exactly one object, of one of ``expression_types``. With
    both ratios 0 no extra random number is drawn, so the scenes are those
    of the single-target generator.

    Returns:
        dict: ``objects`` (list of dict), ``targets`` (list of int: the
        referred objects, empty for no target), ``text`` (str),
        ``expr_type`` (str) and ``texture_seed`` (int).
    """
    kind = None
    if no_target_ratio > 0 or multi_target_ratio > 0:
        u = rng.random()
        kind = NO_TARGET if u < no_target_ratio else MULTI_TARGET \
            if u < no_target_ratio + multi_target_ratio else None
    for _ in range(max_tries):
        num = int(rng.integers(num_objects[0], num_objects[1] + 1))
        objects = _place_objects(rng, num, img_size, size_range)
        if len(objects) < num:
            continue
        if kind == NO_TARGET:
            pool = no_target_expressions(objects)
            hard = [c for c in pool if c['hard']]
            if hard and rng.random() < 0.75:
                pool = hard
        elif kind == MULTI_TARGET:
            pool = multi_target_expressions(objects)
        else:
            pool = []
        if not pool:
            cands = [
                c for c in candidate_expressions(objects, img_size)
                if c['type'] in expression_types
            ]
            if not cands:
                continue
            types = sorted({c['type'] for c in cands})
            etype = types[rng.integers(len(types))]
            pool = [
                dict(c, targets=[c['target']]) for c in cands
                if c['type'] == etype
            ]
        choice = pool[rng.integers(len(pool))]
        return dict(
            objects=objects,
            targets=[int(t) for t in choice['targets']],
            text=choice['text'],
            expr_type=choice['type'],
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
