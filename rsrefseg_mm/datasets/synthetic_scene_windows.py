"""``SyntheticSceneWindowDataset``: windows cut from large synthetic scenes
at arbitrary offsets, as sliding-window inference cuts a scene."""
from typing import List, Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .synthetic import SyntheticReferringDataset, with_rendering
from .synthetic_large_scene import fill_cells, render_block, scene_background
from .synthetic_scenes import (MULTI_TARGET, NO_TARGET, SPLIT_CODES,
                               draw_shape, no_target_expressions, plural)

#: Label of ignored pixels in ``gt_seg_map``.
IGNORE = 255


@DATASETS.register_module()
class SyntheticSceneWindowDataset(BaseSegDataset):
    """Windows of large synthetic scenes with expressions about them.

    Sliding-window inference shows the model hundreds of windows of one
    scene: nearly all of them without the referent, cut at any offset
    through the objects. Each sample here is such a window: a ``window`` px
    crop, at a random offset, of a scene of 2 x 2 cells of ``window`` px
    whose objects and background are drawn as
    :func:`~.synthetic_large_scene.generate_large_scene` draws them (each
    cell placed like one training image of
    :class:`~.synthetic.SyntheticReferringDataset`). The expression names a
    colour and a shape, in the large scenes' wording:

    - with probability ``no_target_ratio`` nothing in the window, not even
      a cut piece of an object
      (:func:`~.synthetic_scenes.no_target_expressions`, a hard one - its
      colour and its shape are both in the window, never together - with
      probability ``hard_ratio`` where the window has one, else any; in
      the plural, ``"all the green triangles"``, half of
      the time, so that the plural does not tell that a referent is
      there);
    - otherwise an object at least ``min_visible`` of which is in the
      window: ``"the red circle"`` where it is the only such object in the
      window, ``"all the red circles"`` (also for one visible instance: a
      scene's several referents lie in different windows) half of the time
      or where there are several.

    The ground truth is 1 on the visible pixels of the referents, 255
    (ignored) on visible pieces of objects of the same colour and shape of
    which less than ``min_visible`` is in the window (whether such a piece
    is meant is not decidable from the window), 0 elsewhere; a window with
    no pixel of 1 has no target (category ``'none'``). Samples are
    deterministic in ``(seed, split, index)``, as in
    :class:`~.synthetic.SyntheticReferringDataset`, whose data info keys
    (``img`` BGR uint8, ``gt_seg_map``, ``referring_mask``, ``text``, ...)
    they have, plus ``offset`` (y, x) of the window in its scene.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        num_samples (int): Number of windows. Defaults to 1000.
        window (int): Window side in pixels (the cells' side). Defaults to
            128.
        seed (int): Base seed. Defaults to 0.
        num_objects (tuple[int, int]): Objects per cell. Defaults to (3, 4).
        object_size (tuple[float, float]): Object side / diameter as a
            fraction of ``window``. Defaults to (0.15, 0.35).
        no_target_ratio (float): Share of no-target windows. Defaults to
            0.5.
        min_visible (float): Share of an object's pixels in the window from
            which it can be the referent. Defaults to 0.5.
        hard_ratio (float): Probability that a no-target expression is
            drawn among the hard ones (where the window has one) rather
            than among all. Defaults to 0.75.
        **kwargs: Other :class:`BaseSegDataset` arguments.
    """
    METAINFO = SyntheticReferringDataset.METAINFO
    #: Scene side in windows.
    CELLS = 2

    def __init__(self,
                 split: str = 'train',
                 num_samples: int = 1000,
                 window: int = 128,
                 seed: int = 0,
                 num_objects: Tuple[int, int] = (3, 4),
                 object_size: Tuple[float, float] = (0.15, 0.35),
                 no_target_ratio: float = 0.5,
                 min_visible: float = 0.5,
                 hard_ratio: float = 0.75,
                 **kwargs) -> None:
        if split not in SPLIT_CODES:
            raise ValueError(f'split must be one of {tuple(SPLIT_CODES)}, '
                             f'got {split!r}')
        if num_samples < 1 or window < 32:
            raise ValueError('num_samples must be >= 1 and window >= 32, '
                             f'got {num_samples}, {window}')
        if not 0 <= no_target_ratio <= 1 or not 0 < min_visible <= 1 or \
                not 0 <= hard_ratio <= 1:
            raise ValueError('no_target_ratio and hard_ratio must be in '
                             '[0, 1] and min_visible in (0, 1], got '
                             f'{no_target_ratio}, {hard_ratio}, '
                             f'{min_visible}')
        self.split = split
        self.num_samples = int(num_samples)
        self.window = int(window)
        self.seed = int(seed)
        self.num_objects = tuple(int(v) for v in num_objects)
        self.object_size = tuple(float(v) for v in object_size)
        self.no_target_ratio = float(no_target_ratio)
        self.min_visible = float(min_visible)
        self.hard_ratio = float(hard_ratio)
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('data_prefix', dict(img_path='', seg_map_path=''))
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """Sample every window: its scene, offset and expression.

        Returns:
            list[dict]: Compact, picklable window descriptions.
        """
        return [self._sample(idx) for idx in range(self.num_samples)]

    def _sample(self, idx: int) -> dict:
        rng = np.random.default_rng(
            np.random.SeedSequence(
                [self.seed, SPLIT_CODES[self.split], 1 << 20, idx]))
        size = self.CELLS * self.window
        objects, _ = fill_cells(rng, size, self.window, self.num_objects,
                                self.object_size)
        offset = tuple(
            int(v)
            for v in rng.integers(0, size - self.window, 2, endpoint=True))
        visible = self._visible(objects, offset)
        seen = [i for i, v in enumerate(visible) if v > 0]
        clear = [i for i, v in enumerate(visible) if v >= self.min_visible]
        text, targets, ignore = None, [], []
        if clear and rng.random() >= self.no_target_ratio:
            ref = objects[clear[rng.integers(len(clear))]]
            same = [
                i for i in seen
                if (objects[i]['color'], objects[i]['shape']) == (ref['color'],
                                                                  ref['shape'])
            ]
            targets = [i for i in same if i in clear]
            ignore = [i for i in same if i not in clear]
            if len(targets) > 1 or rng.random() < 0.5:
                text = f'all the {ref["color"]} {plural(ref["shape"])}'
            else:
                text = f'the {ref["color"]} {ref["shape"]}'
        else:
            pool = no_target_expressions([objects[i] for i in seen])
            hard = [c for c in pool if c['hard']]
            if hard and rng.random() < self.hard_ratio:
                pool = hard
            text = pool[rng.integers(len(pool))]['text']
            if rng.random() < 0.5:  # "all the green triangles": none
                words = text.split()
                text = ' '.join(['all'] + words[:-1] + [plural(words[-1])])
        scene = dict(
            size=size,
            cell=self.window,
            objects=objects,
            texture_seed=int(rng.integers(2**31 - 1)))
        shapes = {objects[t]['shape'] for t in targets}
        return dict(
            scene=scene,
            offset=offset,
            targets=targets,
            ignore=ignore,
            text=text,
            ref_id=idx,
            ann_id=idx,
            image_id=idx,
            sent_id=idx,
            category=NO_TARGET
            if not targets else shapes.pop() if len(shapes) == 1 else 'object',
            expr_type=NO_TARGET if not targets else
            MULTI_TARGET if text.startswith('all ') else 'attribute')

    def _visible(self, objects: List[dict], offset: Tuple[int,
                                                          int]) -> List[float]:
        """Share of each object's pixels inside the window at ``offset``."""
        size = self.CELLS * self.window
        labels = np.zeros((size, size), np.int32)
        for i, obj in enumerate(objects):
            draw_shape(labels, obj, i + 1)
        y, x = offset
        total = np.bincount(labels.ravel(), minlength=len(objects) + 1)
        inside = np.bincount(
            labels[y:y + self.window, x:x + self.window].ravel(),
            minlength=len(objects) + 1)
        return [
            float(inside[i + 1] / max(total[i + 1], 1))
            for i in range(len(objects))
        ]

    def get_data_info(self, idx: int) -> dict:
        """Render window ``idx`` (see the class docstring for the keys).

        Args:
            idx (int): Sample index.

        Returns:
            dict: Data info with ``img`` and ``gt_seg_map``.
        """
        info = super().get_data_info(idx)
        scene = info.pop('scene')
        targets, ignore = info.pop('targets'), info.pop('ignore')
        lum, tint = scene_background(scene)
        y, x = info['offset']
        rgb, labels = render_block(
            scene, y, y + self.window, lum, tint, cols=(x, x + self.window))
        img = np.ascontiguousarray(rgb[::-1].transpose(1, 2, 0))
        mask = np.isin(labels, np.asarray(targets, int) + 1).astype(np.uint8)
        mask[np.isin(labels, np.asarray(ignore, int) + 1)] = IGNORE
        return with_rendering(info, img, mask)
