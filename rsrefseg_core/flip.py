"""A referring view flipped: the pixels *and* the words of direction.

A horizontally flipped image of "the car on the left" shows the car on the
right, so a flipped view asks for the same object only if its expression's
direction words are swapped too. Used by the training / test-time flip
(``rsrefseg_mm``'s ``ReferringRandomFlip``) and by the flip check of scene
windows (:class:`rsrefseg_core.scene.ScenePredictor`).

Torch-free: NumPy and ``re`` only.
"""
import re
from typing import Dict, Optional

import numpy as np

#: Words swapped by a horizontal flip (both ways; lower case).
HORIZONTAL_SWAPS: Dict[str, str] = {
    'left': 'right',
    'leftmost': 'rightmost',
    'lefthand': 'righthand',
    'west': 'east',
    'western': 'eastern',
    'westernmost': 'easternmost',
    'westward': 'eastward',
    'northwest': 'northeast',
    'southwest': 'southeast',
    'northwestern': 'northeastern',
    'southwestern': 'southeastern',
}
#: Words swapped by a vertical flip (both ways; lower case).
VERTICAL_SWAPS: Dict[str, str] = {
    'top': 'bottom',
    'topmost': 'bottommost',
    'upper': 'lower',
    'uppermost': 'lowermost',
    'above': 'below',
    'north': 'south',
    'northern': 'southern',
    'northernmost': 'southernmost',
    'northward': 'southward',
    'northwest': 'southwest',
    'northeast': 'southeast',
    'northwestern': 'southwestern',
    'northeastern': 'southeastern',
}
FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')
_WORD = re.compile(r'[A-Za-z]+')


def _both_ways(swaps: Dict[str, str]) -> Dict[str, str]:
    return {**swaps, **{v: k for k, v in swaps.items()}}


_TABLES = {
    'horizontal': _both_ways(HORIZONTAL_SWAPS),
    'vertical': _both_ways(VERTICAL_SWAPS),
}


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def flip_referring_text(text: str, direction: Optional[str]) -> str:
    """The expression for an image flipped in ``direction``.

    Whole words are swapped (``left`` <-> ``right``, ``leftmost`` <->
    ``rightmost``, ``west`` <-> ``east`` ... for ``'horizontal'``;
    ``top`` <-> ``bottom``, ``upper`` <-> ``lower``, ``above`` <-> ``below``,
    ``north`` <-> ``south`` ... for ``'vertical'``; both for
    ``'diagonal'``), keeping their capitalisation; hyphenated parts count as
    words (``north-west`` -> ``north-east``). Compass words assume north up.

    Args:
        text (str): The referring expression.
        direction (str | None): ``'horizontal'``, ``'vertical'``,
            ``'diagonal'`` or None (no flip: ``text`` is returned).

    Returns:
        str: The expression that refers to the same object in the flipped
        image.
    """
    if direction is None:
        return text
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, '
                         f'got {direction!r}')
    tables = [
        _TABLES[d] for d in ('horizontal', 'vertical')
        if direction in (d, 'diagonal')
    ]

    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = word.lower()
        for table in tables:
            new = table.get(new, new)
        return word if new == word.lower() else _match_case(new, word)

    return _WORD.sub(swap, text)


def flip_array(array: np.ndarray, direction: str) -> np.ndarray:
    """``array`` (H, W, ...) flipped left-right (``'horizontal'``), upside
    down (``'vertical'``) or both (``'diagonal'``), as mmcv's ``imflip``
    flips an image; contiguous. Flipping twice gives ``array`` back.
    """
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, '
                         f'got {direction!r}')
    axes = {'horizontal': (1, ), 'vertical': (0, ), 'diagonal': (0, 1)}
    return np.ascontiguousarray(np.flip(array, axes[direction]))
