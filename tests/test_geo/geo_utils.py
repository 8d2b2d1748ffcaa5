"""Constants shared by the geo tests."""
from rasterio.transform import Affine

#: UTM 33N (the synthetic files use 10 m pixels)
UTM = 'EPSG:32633'
#: Web Mercator with non-square pixels (2 m wide, 3 m high) and an origin
#: away from zero
NON_SQUARE = Affine(2.0, 0.0, 1_300_000.0, 0.0, -3.0, 5_100_000.0)
