"""The image the model sees, with what it came from: nodata, georeference."""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .roi import PixelWindow
from .stretch import describe_ranges


@dataclass
class RasterImage:
    """An image ready for the referring pipeline, plus its provenance.

    Attributes:
        img (np.ndarray): (H, W, 3) uint8 image, **BGR** channel order (as
            ``mmcv.imread`` gives and the test pipelines expect).
        source (str): File name or ``'array <i>'`` (for messages).
        nodata_mask (np.ndarray, optional): (H, W) bool, True where no band
            holds data (nodata value, alpha / internal mask, NaN). None when
            every pixel is valid. The prediction is forced to background
            there.
        transform (affine.Affine, optional): Pixel -> map transform of
            ``img`` (of the crop when ``window`` is set, of the working grid
            when the read was decimated); None when the input is not
            georeferenced.
        crs (rasterio.crs.CRS, optional): Coordinate reference system.
        window (tuple, optional): ``(col_off, row_off, width, height)`` of
            the crop in the full image (its pixels, at the file's
            resolution), when a region of interest was read.
        bands (tuple[int, ...], optional): 1-based bands shown as R, G, B.
        dtype (str): dtype of the data before conversion to uint8.
        stretch (tuple[float, float], optional): Percentiles of the stretch
            applied (None when the data passed through).
        stretch_ranges (list[tuple[float, float]], optional): Per shown
            band, the values mapped to 0 and 255.
        path (str, optional): The file read (for outputs at its
            resolution); None for bytes, arrays and photos.
        native_shape (tuple[int, int], optional): ``(H, W)`` of the region
            read at the file's resolution when ``img`` is a decimated read
            of it (see :mod:`.decimation`); None when ``img`` is at the
            file's resolution.
        native_transform (affine.Affine, optional): Pixel -> map transform
            of that native grid (georeferenced decimated reads).
    """
    img: np.ndarray
    source: str
    nodata_mask: Optional[np.ndarray] = None
    transform: Optional[object] = None
    crs: Optional[object] = None
    window: Optional[PixelWindow] = None
    bands: Optional[Tuple[int, ...]] = None
    dtype: str = 'uint8'
    stretch: Optional[Tuple[float, float]] = None
    stretch_ranges: Optional[List[Tuple[float, float]]] = None
    path: Optional[str] = None
    native_shape: Optional[Tuple[int, int]] = None
    native_transform: Optional[object] = None

    @property
    def georeferenced(self) -> bool:
        """Whether the image has a geotransform."""
        return self.transform is not None

    @property
    def decimated(self) -> bool:
        """Whether ``img`` is a decimated read (a working grid coarser
        than the file)."""
        return self.native_shape is not None

    @property
    def nodata_pixels(self) -> int:
        """Number of nodata pixels."""
        return 0 if self.nodata_mask is None else int(self.nodata_mask.sum())

    def pipeline_inputs(self) -> dict:
        """Keys for the data pipeline (what ``LoadImageFromFile`` adds).

        Returns:
            dict: ``img``, ``img_shape``, ``ori_shape`` and, when they
            apply, ``nodata_mask``, ``geo_transform``, ``crs``,
            ``roi_window`` and ``stretch_ranges``.
        """
        h, w = self.img.shape[:2]
        results = dict(img=self.img, img_shape=(h, w), ori_shape=(h, w))
        extra = dict(
            nodata_mask=self.nodata_mask,
            geo_transform=self.transform,
            crs=self.crs,
            roi_window=self.window,
            stretch_ranges=self.stretch_ranges)
        results.update({k: v for k, v in extra.items() if v is not None})
        return results

    def stretch_message(self) -> Optional[str]:
        """One line with the stretch applied, or None."""
        if self.stretch_ranges is None:
            return None
        bands = self.bands or tuple(range(1, len(self.stretch_ranges) + 1))
        return describe_ranges(self.stretch_ranges, bands, self.dtype,
                               self.stretch)

    def describe(self) -> str:
        """A summary for logs and the web demo (size, bands, stretch, nodata,
        georeference)."""
        h, w = self.img.shape[:2]
        parts = [f'{self.source}: {w} x {h} px']
        if self.decimated:
            nh, nw = self.native_shape
            parts[0] += (f' read from {nw} x {nh} px (each pixel the mean '
                         f'of {nw / w:.3g} x {nh / h:.3g})')
        if self.window is not None:
            c, r, cw, ch = self.window
            parts.append(f'region of interest columns [{c}, {c + cw}), rows '
                         f'[{r}, {r + ch})')
        msg = self.stretch_message()
        if msg:
            parts.append(msg)
        elif self.bands is not None:
            parts.append(f'{self.dtype} bands {self.bands} as R, G, B')
        if self.nodata_pixels:
            parts.append(
                f'{self.nodata_pixels} nodata pixels '
                f'({100 * self.nodata_pixels / (h * w):.1f} %) excluded from '
                'the prediction')
        if self.georeferenced:
            crs = self.crs.to_string() if self.crs is not None else 'no CRS'
            parts.append(f'georeferenced ({crs})')
        return '; '.join(parts)
