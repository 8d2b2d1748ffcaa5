"""Georeferenced outputs: mask GeoTIFF and GeoJSON polygons."""
import json

import numpy as np
import pytest
import rasterio

from rsrefseg_core.geo import (mask_geojson, qgis_style_path, read_image,
                               write_geojson, write_mask_geotiff)


def ring_area(ring):
    x, y = np.asarray(ring, float).T
    return 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def polygon_area(geom):
    rings = geom['coordinates']
    return abs(ring_area(rings[0])) - sum(abs(ring_area(r)) for r in rings[1:])


def shapes_mask(h=64, w=48):
    """A ring (square with a square hole), a blob and a 1-pixel speck."""
    mask = np.zeros((h, w), np.uint8)
    mask[5:25, 5:25] = 1
    mask[10:15, 12:20] = 0  # hole
    mask[40:50, 30:44] = 1
    mask[60, 2] = 1  # speck
    return mask


def test_geotiff_has_the_input_crs_and_transform(geo_files, tmp_path):
    im = read_image(geo_files['non_square'])
    mask = shapes_mask()
    nodata = np.zeros_like(mask, bool)
    nodata[:3] = True
    path = write_mask_geotiff(
        str(tmp_path / 'm.tif'),
        mask,
        im.transform,
        im.crs,
        nodata,
        text='the ring')
    with rasterio.open(geo_files['non_square']) as src, \
            rasterio.open(path) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count) == (48, 64, 1)
        assert out.dtypes == ('uint8', ) and out.nodata == 255
        assert out.profile['compress'] == 'deflate'
        assert out.tags()['expression'] == 'the ring'
        data = out.read(1)
        assert out.colormap(1)[1][:3] == (255, 64, 64)
    assert (data[:3] == 255).all()
    np.testing.assert_array_equal(data[3:], mask[3:])


def test_qgis_style_beside_the_geotiff_keeps_the_image_visible(tmp_path):
    """A TIFF colour map has no alpha (GDAL reads background as opaque
    black), so the transparency lives in ``<name>.qml``, which QGIS loads
    with ``<name>.tif``: paletted band 1, background transparent, target
    opaque red; nodata (255) has no entry, so it is not drawn."""
    import xml.etree.ElementTree as ET

    from affine import Affine
    path = write_mask_geotiff(
        str(tmp_path / 'scene_mask.tif'), shapes_mask(),
        Affine(0.5, 0, 0, 0, -0.5, 0))
    assert qgis_style_path(path) == str(tmp_path / 'scene_mask.qml')
    with rasterio.open(path) as out:  # what GDAL gives: no transparency
        assert out.colormap(1)[0] == (0, 0, 0, 255)
    root = ET.parse(qgis_style_path(path)).getroot()
    renderer = root.find('pipe/rasterrenderer')
    assert renderer.get('type') == 'paletted' and renderer.get('band') == '1'
    entries = {e.get('value'): e.attrib for e in renderer.iter('paletteEntry')}
    assert set(entries) == {'0', '1'}
    assert entries['0']['alpha'] == '0'
    assert entries['1']['alpha'] == '255'
    assert entries['1']['color'] == '#ff4040'


def test_geojson_area_equals_pixel_count_times_pixel_area(geo_files, tmp_path):
    im = read_image(geo_files['non_square'])
    # EPSG:3857 with 2 m x 3 m pixels (conftest)
    assert (im.transform.a, im.transform.e) == (2.0, -3.0)
    pixel_area = 2.0 * 3.0  # non-square pixels
    mask = shapes_mask()
    fc = mask_geojson(mask, im.transform, im.crs, min_area_px=0)
    total = sum(polygon_area(f['geometry']) for f in fc['features'])
    assert total == pytest.approx(mask.sum() * pixel_area)
    assert sum(f['properties']['area'] for f in fc['features']) == \
        pytest.approx(mask.sum() * pixel_area)
    assert len(fc['features']) == 3
    # the ring keeps its hole; exteriors counter-clockwise, holes clockwise
    ring = max(fc['features'], key=lambda f: len(f['geometry']['coordinates']))
    rings = ring['geometry']['coordinates']
    assert len(rings) == 2
    assert ring_area(rings[0]) > 0 > ring_area(rings[1])
    assert polygon_area(ring['geometry']) == pytest.approx(
        (400 - 40) * pixel_area)
    # coordinates are in the input CRS, inside its bounds
    with rasterio.open(geo_files['non_square']) as src:
        b = src.bounds
    pts = np.concatenate([
        np.asarray(r) for f in fc['features']
        for r in f['geometry']['coordinates']
    ])
    assert pts[:, 0].min() >= b.left and pts[:, 0].max() <= b.right
    assert pts[:, 1].min() >= b.bottom and pts[:, 1].max() <= b.top
    assert fc['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::3857'


def test_geojson_drops_specks_and_round_trips(geo_files, tmp_path):
    im = read_image(geo_files['non_square'])
    mask = shapes_mask()
    fc = mask_geojson(
        mask,
        im.transform,
        im.crs,
        min_area_px=4,
        properties=dict(text='l\u2019\u00e9glise'))
    assert len(fc['features']) == 2  # the 1-pixel speck is gone
    total = sum(polygon_area(f['geometry']) for f in fc['features'])
    assert total == pytest.approx((mask.sum() - 1) * 6.0)
    path = write_geojson(str(tmp_path / 'm.geojson'), fc)
    back = json.load(open(path, encoding='utf-8'))
    assert back == json.loads(json.dumps(fc))
    assert back['features'][0]['properties']['text'] == 'l\u2019\u00e9glise'
