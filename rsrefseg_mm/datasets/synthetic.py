"""Synthetic referring-segmentation scenes, generated in memory.

Every scene holds several coloured shapes on a noisy textured background and
one expression that singles out a target object; the ground truth is that
object's mask. The scenes are built so that the target cannot be found
without reading the expression: other objects share its colour or its shape,
and relational expressions ("the leftmost circle", "the largest red object")
are only used where the attribute alone is ambiguous.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .rrsisd import REFERRING_METAINFO

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
        cv2.circle(canvas, (int(round(obj['cx'])), int(round(obj['cy']))),
                   int(round(obj['size'] / 2.0)), value, thickness=-1,
                   lineType=cv2.LINE_8)
    else:
        pts = shape_polygon(obj['shape'], obj['cx'], obj['cy'], obj['size'],
                            obj['angle'])
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], value,
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


def candidate_expressions(objects: Sequence[dict], img_size: int,
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
        shares = any(
            o['color'] == obj['color'] or o['shape'] == obj['shape']
            for j, o in enumerate(objects) if j != i)
        for kind in ('color', 'shape', 'color_shape', 'any'):
            group = [j for j in range(n) if _matches(kind, objects[j], obj)]
            desc = _describe(kind, obj)
            if len(group) == 1:
                if kind != 'any' and shares:
                    out.append(dict(text=f'the {desc}', target=i,
                                    type='attribute'))
                continue
            others = [j for j in group if j != i]
            for word, (axis, sign) in POSITIONS.items():
                key = 'cx' if axis == 0 else 'cy'
                gap = min(sign * (obj[key] - objects[j][key]) for j in others)
                if gap >= position_margin * img_size:
                    out.append(dict(text=f'the {word} {desc}', target=i,
                                    type='position'))
            if all(obj['size'] >= size_ratio * objects[j]['size']
                   for j in others):
                out.append(dict(text=f'the largest {desc}', target=i,
                                type='size'))
            if all(objects[j]['size'] >= size_ratio * obj['size']
                   for j in others):
                out.append(dict(text=f'the smallest {desc}', target=i,
                                type='size'))
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
    if words and (words[0] in POSITIONS or words[0] in ('largest',
                                                         'smallest')):
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
                np.hypot(cx - o['cx'], cy - o['cy']) >
                radius + o['size'] / np.sqrt(2) * 1.1 + 2 for o in objects)
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
    lum = cv2.resize(lum, (img_size, img_size),
                     interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(-8, 8, size=3) + np.array([-6, 10, 4])  # BGR
    img = lum[..., None] + tint.astype(np.float32)[None, None]
    img += rng.normal(0, 10, size=img.shape).astype(np.float32)
    masks = []
    for obj in scene['objects']:
        mask = object_mask(obj, img_size)
        rgb = np.clip(np.array(COLORS[obj['color']]) + obj['jitter'], 0,
                      255)
        fill = rgb[::-1].astype(np.float32)  # BGR
        noise = rng.normal(0, 6, size=(int(mask.sum()), 3))
        img[mask.astype(bool)] = fill + noise
        masks.append(mask)
    return np.clip(img, 0, 255).astype(np.uint8), masks


@DATASETS.register_module()
class SyntheticReferringDataset(BaseSegDataset):
    """Synthetic referring scenes for demos and tests (no files needed).

    Each sample is an image of ``num_objects`` shapes (circle, square,
    triangle, cross) in six colours (red, green, blue, yellow, purple,
    white), 15-35 % of the image side by default, on a noisy textured
    background, plus an expression that refers to exactly one of them:

    - ``attribute``: ``"the red circle"``, ``"the blue object"``,
      ``"the triangle"`` (another object always shares the target's colour
      or shape);
    - ``position``: ``"the leftmost square"``, ``"the topmost green
      object"`` (only where the group has >= 2 members);
    - ``size``: ``"the largest cross"``, ``"the smallest white object"``.

    The ground truth is the target's mask (1) on background (0). Generation
    is deterministic: sample ``i`` of a split depends only on
    ``(seed, split, i)``, and the splits use disjoint random streams, so
    train / val / test never share a scene. ``data_list`` holds compact scene
    parameters (serialisable); images and masks are rendered in
    :meth:`get_data_info`.

    The data info already contains what ``LoadImageFromFile`` and
    ``LoadReferringAnnotations`` would add: ``img`` (H, W, 3) BGR uint8,
    ``gt_seg_map`` (H, W) uint8, ``seg_fields=['gt_seg_map']``,
    ``img_shape``, ``ori_shape``, plus ``referring_mask`` (the same mask, so
    a test pipeline can restore the original-size ground truth after
    ``Resize`` with ``LoadReferringAnnotations``), ``text``, ``ref_id``,
    ``ann_id``, ``image_id``, ``sent_id`` (all = the sample index),
    ``category`` (the target's shape name) and ``expr_type``. There is no
    ``img_path``. Pipelines therefore start at ``Resize``.

    ``shuffle_expressions=True`` is a control experiment: every image is
    paired with the expression of another sample of the split (a seeded
    derangement; ``text_source`` gives the sample the text came from) while
    the ground truth stays the target of the image's *own* expression. The
    text then says nothing about which object is the target. Since every
    scene has 3+ objects and the target is only identified by the words, a
    model that ignores the text cannot score well on the normal data either;
    a model that reads it scores well on normal data and drops to guessing
    level on shuffled data. Training or evaluating with shuffled expressions
    therefore measures how much a model relies on the expression.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        num_samples (int): Number of samples. Defaults to 1000.
        img_size (int): Image side in pixels. Defaults to 128.
        seed (int): Base seed. Defaults to 0.
        num_objects (tuple[int, int]): Inclusive range of objects per scene.
            Defaults to (3, 5); at least 3.
        object_size (tuple[float, float]): Object side / diameter as a
            fraction of ``img_size``. Defaults to (0.15, 0.35).
        expression_types (Sequence[str]): Allowed expression types among
            ``('attribute', 'position', 'size')``. Defaults to all.
        shuffle_expressions (bool): See above. Defaults to False.
        **kwargs: Other :class:`BaseSegDataset` arguments (``pipeline``,
            ``test_mode``, ``indices``, ``serialize_data``, ``lazy_init``).
    """
    METAINFO = dict(REFERRING_METAINFO, categories=SHAPES)

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 1000,
                 img_size: int = 128,
                 seed: int = 0,
                 num_objects: Tuple[int, int] = (3, 5),
                 object_size: Tuple[float, float] = (0.15, 0.35),
                 expression_types: Sequence[str] = EXPRESSION_TYPES,
                 shuffle_expressions: bool = False,
                 **kwargs) -> None:
        if split not in SPLIT_CODES:
            raise ValueError(f'split must be one of {tuple(SPLIT_CODES)}, '
                             f'got {split!r}')
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        if img_size < 32:
            raise ValueError(f'img_size must be >= 32, got {img_size}')
        num_objects = tuple(int(v) for v in num_objects)
        if len(num_objects) != 2 or num_objects[0] < 3 or \
                num_objects[1] < num_objects[0]:
            raise ValueError('num_objects must be (min, max) with '
                             f'3 <= min <= max, got {num_objects}')
        lo, hi = (float(v) for v in object_size)
        if not 0 < lo <= hi < 0.7:
            raise ValueError(f'object_size must satisfy 0 < min <= max < '
                             f'0.7, got {object_size}')
        bad = set(expression_types) - set(EXPRESSION_TYPES)
        if bad or not expression_types:
            raise ValueError(f'expression_types must be a non-empty subset '
                             f'of {EXPRESSION_TYPES}, got {expression_types}')
        if shuffle_expressions and num_samples < 2:
            raise ValueError('shuffle_expressions needs num_samples >= 2')
        self.split = split
        self.num_samples = int(num_samples)
        self.img_size = int(img_size)
        self.seed = int(seed)
        self.num_objects = num_objects
        self.object_size = (lo, hi)
        self.expression_types = tuple(expression_types)
        self.shuffle_expressions = bool(shuffle_expressions)
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('data_prefix', dict(img_path='', seg_map_path=''))
        super().__init__(**kwargs)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence(
                [self.seed, SPLIT_CODES[self.split], *keys]))

    def load_data_list(self) -> List[dict]:
        """Generate the scene parameters of every sample.

        Returns:
            list[dict]: Compact, picklable scene descriptions.
        """
        data_list = []
        for idx in range(self.num_samples):
            scene = generate_scene(
                self._rng(idx), self.img_size, self.num_objects,
                self.object_size, self.expression_types)
            data_list.append(
                dict(scene=scene, text=scene['text'], ref_id=idx,
                     ann_id=idx, image_id=idx, sent_id=idx,
                     category=scene['objects'][scene['target']]['shape'],
                     expr_type=scene['expr_type']))
        if self.shuffle_expressions:
            perm = self._rng(2**31 - 1).permutation(self.num_samples)
            for i in range(self.num_samples):  # derangement: no fixed point
                if perm[i] == i:
                    j = (i + 1) % self.num_samples
                    perm[i], perm[j] = perm[j], perm[i]
            texts = [d['text'] for d in data_list]
            for i, d in enumerate(data_list):
                d['text'] = texts[perm[i]]
                d['text_source'] = int(perm[i])
        return data_list

    def get_scene(self, idx: int) -> dict:
        """Scene parameters of sample ``idx`` (objects, target, text)."""
        return copy.deepcopy(super().get_data_info(idx)['scene'])

    def get_data_info(self, idx: int) -> dict:
        """Render sample ``idx`` (see the class docstring for the keys).

        Args:
            idx (int): Sample index.

        Returns:
            dict: Data info with ``img`` and ``gt_seg_map``.
        """
        info = super().get_data_info(idx)
        scene = info.pop('scene')
        img, masks = render_scene(scene, self.img_size)
        mask = masks[scene['target']]
        shape = (self.img_size, self.img_size)
        info.update(
            img=img,
            gt_seg_map=mask,
            referring_mask=mask.copy(),
            seg_fields=['gt_seg_map'],
            img_shape=shape,
            ori_shape=shape,
            reduce_zero_label=False,
            label_map=None)
        return info
