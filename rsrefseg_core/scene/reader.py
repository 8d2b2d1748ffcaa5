"""A scene read window by window, never whole.

Files that rasterio reads (GeoTIFF and every GDAL format, 16-bit PNG,
georeferenced JPEG) stay open and each window is read from them at the
file's resolution (a rasterio ``Window``): memory follows the window, not
the scene. Every window of a scene must look alike to the model, so the
percentile stretch of non-8-bit data is taken once, on a decimated read of
the whole scene (longest side ``stretch_size``), and applied to every
window with the same ranges. 8-bit photos (JPEG / PNG decoded by OpenCV)
and arrays are held in memory and sliced.
"""
import hashlib
import os
import os.path as osp
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..geo import DEFAULT_STRETCH, RasterImage, array_to_image, read_image
from ..geo.decimation import read_bands, read_cache_env
from ..geo.reader import has_georeference_sidecar, is_8bit_photo
from ..geo.roi import window_transform
from ..geo.stretch import StretchType, apply_ranges, check_stretch, to_uint8
from .grid import Box

SceneSource = Union[str, Path, np.ndarray, RasterImage]
#: Longest side of the decimated read the scene's stretch is taken on.
STRETCH_READ_SIZE = 1024


class SceneReader:
    """Windows of one scene as :class:`~rsrefseg_core.geo.RasterImage`.

    Args:
        source (str | Path | np.ndarray | RasterImage): A raster file, an
            (H, W, C) array (BGR without ``bands``) or an image already
            read.
        bands (Sequence[int], optional): 1-based bands shown as R, G, B.
        stretch: Percentile stretch of non-8-bit data, taken once on the
            scene (see the module docstring).
        name (str, optional): Shown instead of the path in messages.
        stretch_size (int): Longest side of the read the stretch is taken
            on. Defaults to :data:`STRETCH_READ_SIZE`.

    Raises:
        FileNotFoundError: For a missing file.
        OSError: For a file that cannot be read (naming it).
    """

    def __init__(self,
                 source: SceneSource,
                 bands: Optional[Sequence[int]] = None,
                 stretch: StretchType = DEFAULT_STRETCH,
                 name: Optional[str] = None,
                 stretch_size: int = STRETCH_READ_SIZE) -> None:
        self.stretch = check_stretch(stretch)
        self._src = None
        #: The whole image when it is held in memory, else None.
        self.image: Optional[RasterImage] = None
        if isinstance(source, RasterImage):
            self.image = source
        elif isinstance(source, np.ndarray):
            self.image = array_to_image(
                source, bands, stretch, name=name or 'array')
        elif not self._opens_with_rasterio(str(source)):
            self.image = read_image(source, bands, stretch, name=name)
        if self.image is not None:
            self._init_memory()
        else:
            self._init_file(str(source), bands, name)

    @staticmethod
    def _opens_with_rasterio(path: str) -> bool:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} not found')
        with open(path, 'rb') as f:
            head = f.read(32)
        if not head:
            raise OSError(f'cannot decode image {path}: the file is empty')
        return not is_8bit_photo(head) or has_georeference_sidecar(path)

    def _init_memory(self) -> None:
        image = self.image
        self.source = image.source
        self.path = image.path
        self.height, self.width = image.img.shape[:2]
        self.transform, self.crs = image.transform, image.crs
        self.bands, self.ranges = image.bands, image.stretch_ranges
        self.dtype = image.dtype
        digest = hashlib.sha256(image.img.tobytes())
        if image.nodata_mask is not None:
            digest.update(np.packbits(image.nodata_mask).tobytes())
        self.key = f'array:{digest.hexdigest()}'

    def _init_file(self, path: str, bands, name: Optional[str]) -> None:
        # the stretch (and band choice, georeference checks, errors on a
        # bad file) of a decimated read of the whole scene
        overview = read_image(
            path, bands, self.stretch, name=name, max_size=STRETCH_READ_SIZE)
        import rasterio
        from affine import Affine
        from rasterio.errors import NotGeoreferencedWarning, RasterioError
        self.source, self.path = overview.source, path
        self.bands, self.ranges = overview.bands, overview.stretch_ranges
        self.dtype = overview.dtype
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self._src = rasterio.open(path)
        except RasterioError as e:
            self.close()
            raise OSError(f'cannot read image {self.source} with rasterio '
                          f'({type(e).__name__}: {e})') from e
        src = self._src
        self.height, self.width = src.height, src.width
        georef = src.crs is not None or src.transform != Affine.identity()
        self.transform = src.transform if georef else None
        self.crs = src.crs
        stat = os.stat(path)
        self.key = (f'file:{osp.abspath(path)}:{stat.st_size}:'
                    f'{stat.st_mtime_ns}:{self.bands}:{self.stretch}:'
                    f'{self.ranges}')

    # -- reading --------------------------------------------------------
    def read(self, box: Box) -> RasterImage:
        """The window ``(y1, y2, x1, x2)`` as the model sees it.

        Returns:
            RasterImage: (h, w, 3) uint8 BGR, its nodata mask and the
            window's geotransform.
        """
        y1, y2, x1, x2 = box
        window = (x1, y1, x2 - x1, y2 - y1)
        source = f'{self.source} window rows [{y1}, {y2}) columns ' \
                 f'[{x1}, {x2})'
        transform = None if self.transform is None else \
            window_transform(self.transform, window)
        if self.image is not None:
            nodata = self.image.nodata_mask
            return RasterImage(
                img=np.ascontiguousarray(self.image.img[y1:y2, x1:x2]),
                source=source,
                nodata_mask=None if nodata is None else np.ascontiguousarray(
                    nodata[y1:y2, x1:x2]),
                transform=transform,
                crs=self.crs,
                window=window,
                bands=self.bands,
                dtype=self.dtype)
        import rasterio
        from rasterio.windows import Window
        with rasterio.Env(**read_cache_env()):
            data, valid = read_bands(self._src, self.bands, Window(*window))
        if np.issubdtype(data.dtype, np.floating):
            valid = valid & np.isfinite(data)
        if self.ranges is not None:
            rgb = apply_ranges(data, valid, self.ranges)
        else:  # uint8, or stretch=None on data in 0-255
            rgb = to_uint8(data, valid,
                           None if self.stretch is None else self.stretch,
                           source)[0]
        valid_any = valid.any(axis=0)
        return RasterImage(
            img=np.ascontiguousarray(rgb[::-1].transpose(1, 2, 0)),
            source=source,
            nodata_mask=None if valid_any.all() else ~valid_any,
            transform=transform,
            crs=self.crs,
            window=window,
            bands=self.bands,
            dtype=self.dtype,
            path=self.path)

    def valid_rows(self, row: int, stop: int) -> np.ndarray:
        """(stop - row, W) bool: where the scene holds data (any shown
        band), for the nodata of outputs."""
        if self.image is not None:
            nodata = self.image.nodata_mask
            return np.ones((stop - row, self.width), bool) if nodata is None \
                else ~nodata[row:stop]
        import rasterio
        from rasterio.windows import Window
        window = Window(0, row, self.width, stop - row)
        bands = list(self.bands)
        with rasterio.Env(**read_cache_env()):
            valid = self._src.read_masks(bands, window=window) > 0
            if np.issubdtype(np.dtype(self.dtype), np.floating):
                valid &= np.isfinite(self._src.read(bands, window=window))
        return valid.any(axis=0)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(H, W)`` of the scene."""
        return self.height, self.width

    def close(self) -> None:
        """Close the file (a no-op for images in memory)."""
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self) -> 'SceneReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
