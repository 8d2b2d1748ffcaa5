"""Remote-sensing inputs and outputs (:mod:`rsrefseg_deploy.geo`, which the
ONNX Runtime predictor shares without torch): GeoTIFF / any rasterio-readable
file in (band selection, percentile stretch, nodata, region of interest,
decimation of large scenes while reading), the mask as a georeferenced
GeoTIFF and its polygons as GeoJSON out."""
from rsrefseg_deploy.geo import *  # noqa: F401,F403
from rsrefseg_deploy.geo import __all__  # noqa: F401
