"""``SyntheticReferringDataset``: the scenes of :mod:`.synthetic_scenes`,
generated in memory, as an mmseg dataset."""
import copy
from typing import List, Sequence, Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .rrsisd import REFERRING_METAINFO
from .synthetic_scenes import (COLORS, EXPRESSION_TYPES, NO_TARGET, POSITIONS,
                               SHAPES, SPLIT_CODES, candidate_expressions,
                               generate_scene, object_mask, render_scene,
                               resolve_expression)

# the scene helpers stay importable from here
__all__ = [
    'SyntheticReferringDataset', 'COLORS', 'EXPRESSION_TYPES', 'POSITIONS',
    'SHAPES', 'candidate_expressions', 'generate_scene', 'object_mask',
    'render_scene', 'resolve_expression'
]


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

    Generalized referring (``no_target_ratio``, ``multi_target_ratio``):
    that share of the samples refers to nothing in the image (``"the green
    triangle"`` where there is none; an empty mask, category ``'none'``)
    or to every object of a group (``"all the red objects"``).

    The ground truth is the targets' mask (1) on background (0). Generation
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
    ``category`` (the targets' shape name, ``'object'`` for targets of
    several shapes, ``'none'`` for no target) and ``expr_type``. There is no
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
        no_target_ratio (float): Share of no-target expressions. Defaults
            to 0.
        multi_target_ratio (float): Share of multi-target expressions (where
            a scene has a group of two or more). Defaults to 0.
        **kwargs: Other :class:`BaseSegDataset` arguments (``pipeline``,
            ``test_mode``, ``indices``, ``serialize_data``, ``lazy_init``).
    """
    METAINFO = dict(
        REFERRING_METAINFO, categories=SHAPES + ('object', NO_TARGET))

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 1000,
                 img_size: int = 128,
                 seed: int = 0,
                 num_objects: Tuple[int, int] = (3, 5),
                 object_size: Tuple[float, float] = (0.15, 0.35),
                 expression_types: Sequence[str] = EXPRESSION_TYPES,
                 shuffle_expressions: bool = False,
                 no_target_ratio: float = 0.0,
                 multi_target_ratio: float = 0.0,
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
        if min(no_target_ratio, multi_target_ratio) < 0 or \
                no_target_ratio + multi_target_ratio > 1:
            raise ValueError(
                'no_target_ratio and multi_target_ratio must be >= 0 and sum '
                f'to at most 1, got {no_target_ratio}, {multi_target_ratio}')
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
        self.no_target_ratio = float(no_target_ratio)
        self.multi_target_ratio = float(multi_target_ratio)
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('data_prefix', dict(img_path='', seg_map_path=''))
        super().__init__(**kwargs)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, SPLIT_CODES[self.split],
                                    *keys]))

    def load_data_list(self) -> List[dict]:
        """Generate the scene parameters of every sample.

        Returns:
            list[dict]: Compact, picklable scene descriptions.
        """
        data_list = []
        for idx in range(self.num_samples):
            scene = generate_scene(
                self._rng(idx),
                self.img_size,
                self.num_objects,
                self.object_size,
                self.expression_types,
                no_target_ratio=self.no_target_ratio,
                multi_target_ratio=self.multi_target_ratio)
            shapes = {scene['objects'][t]['shape'] for t in scene['targets']}
            data_list.append(
                dict(
                    scene=scene,
                    text=scene['text'],
                    ref_id=idx,
                    ann_id=idx,
                    image_id=idx,
                    sent_id=idx,
                    category=shapes.pop()
                    if len(shapes) == 1 else 'object' if shapes else NO_TARGET,
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
        mask = np.zeros((self.img_size, self.img_size), np.uint8)
        for t in scene['targets']:
            mask |= masks[t]
        return with_rendering(info, img, mask)


def with_rendering(info: dict, img: np.ndarray, mask: np.ndarray) -> dict:
    """``info`` with a rendered sample: the (H, W, 3) BGR ``img`` and the
    (H, W) uint8 ``mask`` as ``gt_seg_map`` and ``referring_mask``, and
    the keys the loading transforms would add."""
    shape = img.shape[:2]
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
