"""Remote-sensing inputs and outputs: GeoTIFF / any rasterio-readable file
in (band selection, percentile stretch, nodata, region of interest,
decimation of large scenes while reading), the mask as a georeferenced
GeoTIFF (on the working grid or the file's) and its polygons as GeoJSON out.

rasterio is an optional dependency (``pip install -e ".[geo]"``, installed
by ``make install``); 8-bit JPEG / PNG inputs and arrays do not need it.
NumPy, OpenCV and rasterio only: the ONNX Runtime predictor reads and writes
with it, and ``rsrefseg_core.geo`` re-exports it.
"""
from .decimation import decimated_shape, scale_transform
from .export import (DEFAULT_MIN_AREA_PX, mask_geojson, mask_polygons,
                     qgis_style_path, write_geojson, write_mask_geotiff)
from .inputs import InputType, image_cache_key, load_referring_image
from .native_mask import write_native_mask_geotiff
from .raster_image import RasterImage
from .reader import (array_to_image, is_8bit_photo, read_image,
                     require_rasterio, select_bands)
from .roi import parse_roi, roi_window, window_transform
from .stretch import DEFAULT_STRETCH, check_stretch, to_uint8

__all__ = [
    'InputType', 'image_cache_key', 'load_referring_image', 'RasterImage',
    'read_image', 'array_to_image', 'select_bands', 'is_8bit_photo',
    'require_rasterio', 'to_uint8', 'check_stretch', 'DEFAULT_STRETCH',
    'parse_roi', 'roi_window', 'window_transform', 'write_mask_geotiff',
    'mask_polygons', 'mask_geojson', 'write_geojson', 'DEFAULT_MIN_AREA_PX',
    'qgis_style_path', 'decimated_shape', 'scale_transform',
    'write_native_mask_geotiff'
]
