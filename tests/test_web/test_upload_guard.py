"""rsrefseg_core.web.UploadGuard: crafted uploads that make GDAL read a
local file or send HTTP requests are refused by their content, side-car
files beside an upload are not read, and the accepted formats are read from
a private copy that is gone afterwards."""
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError

from rsrefseg_core.geo import read_image
from rsrefseg_core.web import SAFE_GDAL_OPTIONS, UploadGuard
from rsrefseg_core.web.upload_guard import sniff_format
from helpers import recording_http_server

SECRET = b'TOP-SECRET 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNO'


@pytest.fixture
def http_server():
    """(port, requests) of an HTTP server on 127.0.0.1 recording requests."""
    with recording_http_server() as served:
        yield served


def raw_band_vrt(path, target, size=8):
    """A VRT whose one band is the bytes of ``target``, read raw."""
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">\n'
        '  <VRTRasterBand dataType="Byte" band="1" '
        'subClass="VRTRawRasterBand">\n'
        f'    <SourceFilename relativetoVRT="0">{target}</SourceFilename>\n'
        '    <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>'
        f'<LineOffset>{size}</LineOffset>\n'
        '  </VRTRasterBand>\n</VRTDataset>\n')
    return path


def url_source_vrt(path, url, size=8):
    """A VRT whose one band is read from ``url``."""
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">\n'
        '  <VRTRasterBand dataType="Byte" band="1"><SimpleSource>\n'
        f'    <SourceFilename relativeToVRT="0">{url}</SourceFilename>\n'
        '    <SourceBand>1</SourceBand>\n'
        '  </SimpleSource></VRTRasterBand>\n</VRTDataset>\n')
    return path


def write_tif(path, value, size=64):
    with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=size,
            height=size,
            count=1,
            dtype='uint8') as dst:
        dst.write(np.full((1, size, size), value, np.uint8))
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / 'secret.txt'
    path.write_bytes(SECRET)
    return path


def test_raw_band_vrt_reads_the_secret_without_the_guard(tmp_path, secret):
    """The crafted file is a working attack: read as any raster, its pixels
    are the secret's bytes."""
    vrt = raw_band_vrt(tmp_path / 'evil.vrt', secret)
    image = read_image(str(vrt), bands=(1, ), stretch=None)
    assert bytes(image.img[..., 0].ravel()).startswith(SECRET)


@pytest.mark.parametrize('name', ['evil.vrt', 'evil.tif', 'evil.png'])
def test_raw_band_vrt_is_refused_by_its_content(tmp_path, secret, name):
    vrt = raw_band_vrt(tmp_path / name, secret)
    guard = UploadGuard(str(tmp_path / 'private'))
    with pytest.raises(ValueError) as exc:
        with guard.open(str(vrt), name):
            pytest.fail('a VRT was let through')
    assert str(exc.value) == (
        f'{name} is refused: it is a VRT (it names other files or URLs for '
        'the server to read); upload a GeoTIFF / TIFF, PNG or JPEG file')
    assert os.listdir(tmp_path / 'private') == []


def test_url_vrt_sends_no_request(tmp_path, http_server):
    port, requests = http_server
    url = f'/vsicurl/http://127.0.0.1:{port}/scene.tif'
    vrt = url_source_vrt(tmp_path / 'remote.tif', url)
    # the crafted file is a working attack: read as any raster, it
    # makes the server send requests
    with pytest.raises(RasterioIOError), rasterio.open(str(vrt)) as src:
        src.read(1)
    assert requests, 'the VRT sent no request without the guard'
    requests.clear()
    with pytest.raises(ValueError, match='remote.tif is refused: it is a VRT'):
        with UploadGuard(str(tmp_path)).open(str(vrt), 'remote.tif'):
            pass
    assert requests == []


@pytest.mark.parametrize(
    'prefix', ['/vsicurl/', '/vsicurl_streaming/', '/vsis3/bucket/'])
def test_safe_gdal_options_send_no_request(tmp_path, http_server, prefix):
    """Behind the format check: with SAFE_GDAL_OPTIONS, no network file
    system of GDAL sends a request, also when a VRT asks for it, also in a
    worker thread (where rasterio sets thread-local options)."""
    port, requests = http_server
    endpoint = dict(
        AWS_S3_ENDPOINT=f'127.0.0.1:{port}',
        AWS_HTTPS='NO',
        AWS_NO_SIGN_REQUEST='YES',
        AWS_VIRTUAL_HOSTING='FALSE',
        GDAL_HTTP_MAX_RETRY='0')
    target = (f'{prefix}http://127.0.0.1:{port}/scene.tif'
              if 'curl' in prefix else f'{prefix}scene.tif')
    vrt = url_source_vrt(tmp_path / 'remote.vrt', target)

    def read(options):
        for source in (target, str(vrt)):
            with rasterio.Env(**endpoint, **options):
                with pytest.raises(RasterioIOError), \
                        rasterio.open(source) as src:
                    src.read(1)

    read({})
    assert requests, f'{prefix} sent no request without the options'
    requests.clear()
    read(SAFE_GDAL_OPTIONS)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(read, SAFE_GDAL_OPTIONS).result()
    assert requests == []


@pytest.mark.parametrize(
    'content, why',
    [
        (b'<!DOCTYPE html><script>alert(1)</script>', 'an XML / HTML file'),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
         'an XML / HTML file'),
        (b'GIF89a\x01\x00\x01\x00', 'in no accepted format'),
        (b'\x00\x00\x00\x0cjP  \r\n\x87\n', 'in no accepted format'),  # JP2
    ])
def test_other_formats_are_refused(tmp_path, content, why):
    path = tmp_path / 'upload.tif'
    path.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        with UploadGuard(str(tmp_path)).open(str(path), 'scene.tif'):
            pass
    assert str(exc.value) == (f'scene.tif is refused: it is {why}; upload '
                              'a GeoTIFF / TIFF, PNG or JPEG file')


def test_empty_and_unreadable_files(tmp_path):
    guard = UploadGuard(str(tmp_path / 'private'))
    empty = tmp_path / 'empty.tif'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='^empty.tif is empty$'):
        with guard.open(str(empty), 'empty.tif'):
            pass
    broken = tmp_path / 'broken.tif'
    broken.write_bytes(b'II*\x00' + b'not a tiff' * 10)
    with pytest.raises(ValueError) as exc:
        with guard.open(str(broken), 'broken.tif'):
            pass
    msg = str(exc.value)
    assert msg.startswith('broken.tif starts like a GeoTIFF / TIFF file but '
                          'GDAL cannot read it as one')
    assert str(tmp_path) not in msg  # the private copy's path is not shown
    assert os.listdir(tmp_path / 'private') == []


def test_side_car_overviews_are_not_read(tmp_path):
    """An upload whose folder holds a ``.ovr`` with other pixels: read
    decimated without the guard, GDAL takes the overview's; through the
    guard the file's own pixels."""
    upload = write_tif(tmp_path / 'scene.tif', 1)
    write_tif(tmp_path / 'scene.tif.ovr', 200, size=32)
    (tmp_path / 'scene.tif.aux.xml').write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>1</NoDataValue>'
        '</PAMRasterBand></PAMDataset>')
    plain = read_image(str(upload), bands=(1, ), stretch=None, max_size=32)
    assert plain.img.mean() == 200  # the side-car's pixels
    guard = UploadGuard(str(tmp_path / 'private'))
    with guard.open(str(upload), 'scene.tif') as path:
        image = read_image(path, bands=(1, ), stretch=None, max_size=32)
        with rasterio.open(path) as src:
            assert src.files == [path] and src.overviews(1) == []
            assert src.nodata is None  # the .aux.xml's nodata not read
    assert image.img.shape == (32, 32, 3) and (image.img == 1).all()
    assert image.nodata_mask is None


def write_accepted(tmp_path, kind):
    """A file of an accepted format, and the GDAL driver it is."""
    rgb = np.random.default_rng(0).integers(0, 255, (16, 20, 3), np.uint8)
    if kind == 'geotiff':
        path = tmp_path / 'scene.tif'
        with rasterio.open(
                path,
                'w',
                driver='GTiff',
                width=20,
                height=16,
                count=3,
                dtype='uint8',
                crs='EPSG:32633',
                transform=rasterio.Affine(10, 0, 5e5, 0, -10, 4e6)) as dst:
            dst.write(rgb.transpose(2, 0, 1))
        return path, 'GTiff'
    if kind == 'bigtiff':
        path = tmp_path / 'big.tif'
        with rasterio.open(
                path,
                'w',
                driver='GTiff',
                width=20,
                height=16,
                count=3,
                dtype='uint16',
                BIGTIFF='YES') as dst:
            dst.write(rgb.transpose(2, 0, 1).astype(np.uint16) * 100)
        return path, 'GTiff'
    ext = dict(png='.png', png16='.png', jpeg='.jpg')[kind]
    path = tmp_path / f'scene{ext}'
    cv2.imwrite(
        str(path),
        rgb.astype(np.uint16) * 100 if kind == 'png16' else rgb)
    return path, 'PNG' if kind.startswith('png') else 'JPEG'


@pytest.mark.parametrize('kind',
                         ['geotiff', 'bigtiff', 'png', 'png16', 'jpeg'])
def test_accepted_formats_are_read_from_a_private_copy(tmp_path, kind):
    upload, driver = write_accepted(tmp_path, kind)
    root = tmp_path / 'private'
    guard = UploadGuard(str(root))
    assert guard.check_format(str(upload), upload.name) == driver
    with guard.open(str(upload), upload.name) as path:
        folder = os.path.dirname(path)
        assert os.path.dirname(folder) == str(root)
        assert os.listdir(folder) == [os.path.basename(path)]
        assert open(path, 'rb').read() == upload.read_bytes()
        image = read_image(path, name=upload.name)
        expected = read_image(str(upload), name=upload.name)
        np.testing.assert_array_equal(image.img, expected.img)
        assert image.source == upload.name
        if kind == 'geotiff':
            assert image.crs == expected.crs and image.georeferenced
    assert os.listdir(root) == []  # the copy's folder is gone
    assert upload.is_file()  # the upload itself is not touched


def test_gdal_options_hold_only_inside_the_block(tmp_path):
    upload, _ = write_accepted(tmp_path, 'geotiff')
    with UploadGuard(str(tmp_path / 'private')).open(str(upload), 'a.tif'):
        options = rasterio.env.getenv()
        for key, value in SAFE_GDAL_OPTIONS.items():
            assert options[key] == value
    assert not rasterio.env.hasenv() or \
        'CPL_VSIL_CURL_ALLOWED_FILENAME' not in rasterio.env.getenv()


@pytest.mark.parametrize('head, driver', [
    (b'II*\x00\x08\x00', 'GTiff'),
    (b'MM\x00*\x00\x00', 'GTiff'),
    (b'II+\x00\x08\x00', 'GTiff'),
    (b'MM\x00+\x00\x08', 'GTiff'),
    (b'\x89PNG\r\n\x1a\n\x00', 'PNG'),
    (b'\xff\xd8\xff\xe0', 'JPEG'),
    (b'<VRTDataset', None),
    (b'BM\x00\x00', None),
    (b'II*', None),
])
def test_sniff_format(head, driver):
    assert sniff_format(head) == driver
