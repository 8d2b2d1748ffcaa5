"""Flipping of a referring sample: the image *and* the words of direction.

A horizontally flipped image of "the car on the left" shows the car on the
right. Flipping the pixels alone (mmseg's ``RandomFlip``) turns such an
expression into a wrong one; :class:`ReferringRandomFlip` also swaps the
direction words (:func:`rsrefseg_core.flip.flip_referring_text`), so that
the flipped view asks for the same object.
"""
from mmseg.datasets.transforms import RandomFlip
from mmseg.registry import TRANSFORMS

from rsrefseg_core.flip import flip_referring_text

__all__ = ['ReferringRandomFlip', 'flip_referring_text']


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
