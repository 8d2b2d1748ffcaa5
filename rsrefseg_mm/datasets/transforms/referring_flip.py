"""Flipping of a referring sample: the image *and* the words of direction.

A horizontally flipped image of "the car on the left" shows the car on the
right. Flipping the pixels alone (mmseg's ``RandomFlip``) turns such an
expression into a wrong one; :class:`ReferringRandomFlip` also swaps the
direction words, so that the flipped view asks for the same object.
"""
import re
from typing import Dict, Optional

from mmseg.datasets.transforms import RandomFlip
from mmseg.registry import TRANSFORMS

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


@TRANSFORMS.register_module()
class ReferringRandomFlip(RandomFlip):
    """mmseg's ``RandomFlip`` that also flips the expression's directions.

    Same arguments as :class:`mmseg.datasets.transforms.RandomFlip`; when
    the sample is flipped, ``results['text']`` becomes
    :func:`flip_referring_text` of it (``'the leftmost red object'`` ->
    ``'the rightmost red object'`` for a horizontal flip). Use it instead of
    ``RandomFlip`` in referring pipelines (test-time augmentation,
    training augmentation).

    Required keys: ``img``, ``text``; modified: ``img``, ``gt_seg_map``
    (optional), ``text``; added: ``flip``, ``flip_direction``.
    """

    def _flip(self, results: dict) -> None:
        """Flip the image, maps and the expression."""
        super()._flip(results)
        if 'text' not in results:
            raise KeyError('ReferringRandomFlip needs the expression '
                           '(`text`) of the sample; got the keys '
                           f'{sorted(results)} (image '
                           f'{results.get("img_path")})')
        results['text'] = flip_referring_text(results['text'],
                                              results['flip_direction'])
