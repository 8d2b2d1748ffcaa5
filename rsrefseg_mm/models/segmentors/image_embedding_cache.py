"""Image embeddings shared by consecutive test samples of one image
(``test_cfg.group_by_image``)."""
from typing import Dict, List, Optional

import torch
from torch import Tensor


class ImageEmbeddingCacheMixin:
    """For :class:`~rsrefseg_mm.models.segmentors.RSRefSeg`: the embeddings
    of the last ``test_cfg.image_cache_size`` (default 4) distinct input
    images, found again by an exact pixel match. Needs ``encode_image``,
    ``test_cfg`` and an ``image_encodings`` counter on the model.
    """

    def _cached_image_embeddings(self, inputs: Tensor) -> Dict[str, Tensor]:
        """:meth:`encode_image` of ``inputs``, reusing rows whose pixels
        equal (exactly) those of an image encoded before in this mode.

        Args:
            inputs (Tensor): (B, 3, H, W) preprocessed images.

        Returns:
            dict: As :meth:`encode_image` (``with_sam=True``).
        """
        cache: list = self.__dict__.setdefault('_image_cache', [])
        rows: List[Optional[Dict[str, Tensor]]] = []
        for image in inputs:
            rows.append(
                next((emb for key, emb in cache
                      if key.shape == image.shape and torch.equal(key, image)),
                     None))
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            encoded = self.encode_image(inputs[missing])
            self.image_encodings += len(missing)
            for j, i in enumerate(missing):
                rows[i] = {k: v[j:j + 1] for k, v in encoded.items()}
                cache.append((inputs[i], rows[i]))
        del cache[:-int(self.test_cfg.get('image_cache_size', 4))]
        return {k: torch.cat([row[k] for row in rows]) for k in rows[0]}

    def train(self, mode: bool = True):
        """Set the mode; cached image embeddings (``group_by_image``) are
        dropped at every switch, since training changes the weights."""
        self.__dict__['_image_cache'] = []
        return super().train(mode)
