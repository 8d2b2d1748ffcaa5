"""demo/web_demo.py served on 127.0.0.1 and driven over real HTTP by
gradio_client, with every non-loopback connection refused and recorded:
results, errors, parallel clients, the upload limit, the files left on
disk by a stream of requests, and what a stranger may try: uploads that
make GDAL read a server file or send a request, an uploaded HTML page
served back, a very long expression, more requests than the queue holds."""
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

from rsrefseg_mm.apis import init_referring_model
from helpers import free_port, load_script, recording_http_server

LOOPBACK = ('127.', '::1', 'localhost')


class NetworkGuard:
    """Refuse and record connections / lookups of non-loopback hosts."""

    def __init__(self):
        self.attempts = []

    def _local(self, host) -> bool:
        return not isinstance(host, str) or host.startswith(LOOPBACK)

    def __enter__(self):
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex
        self._getaddrinfo = socket.getaddrinfo
        guard = self

        def connect(sock, address, _real=self._connect):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and \
                    not guard._local(address[0]):
                guard.attempts.append(address)
                raise OSError(f'test: network access to {address} refused')
            return _real(sock, address)

        def connect_ex(sock, address, _real=self._connect_ex):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and \
                    not guard._local(address[0]):
                guard.attempts.append(address)
                return 111  # ECONNREFUSED
            return _real(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if host is not None and not guard._local(
                    host.decode() if isinstance(host, bytes) else host):
                guard.attempts.append(host)
                raise socket.gaierror(f'test: lookup of {host} refused')
            return guard._getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        socket.getaddrinfo = getaddrinfo
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._connect
        socket.socket.connect_ex = self._connect_ex
        socket.getaddrinfo = self._getaddrinfo


#: Upload limit of the served demo (the examples are far smaller).
MAX_UPLOAD = '1mb'


def start_demo(web, model, work, examples=(), max_queue=None, **kwargs):
    """Build and launch a demo on a free loopback port (serving files from
    ``work``, which holds Gradio's cache); (demo, url, predictor)."""
    ttl = kwargs.pop('cache_ttl', web.CACHE_TTL)
    predictor = web.WebPredictor(
        model,
        str(work / 'out'),
        gradio_cache=os.environ['GRADIO_TEMP_DIR'],
        cache_ttl=ttl,
        **kwargs)
    demo = web.build_demo(predictor, examples, ttl, MAX_UPLOAD)
    port = free_port()
    _, url, _ = web.launch(
        demo,
        '127.0.0.1',
        port, [str(work)],
        block=False,
        max_upload_size=MAX_UPLOAD,
        max_queue=max_queue or web.MAX_QUEUE)
    assert url.startswith(f'http://127.0.0.1:{port}')
    return demo, url, predictor


@pytest.fixture(scope='module')
def served(tmp_path_factory, tiny_config):
    """(client, examples, guard, work dir) of a running demo."""
    work = tmp_path_factory.mktemp('web')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    net = MODELS.build(Config.fromfile(tiny_config).model)
    ckpt = work / 'tiny.pth'
    torch.save(dict(state_dict=net.state_dict(), meta=dict()), ckpt)
    with NetworkGuard() as guard, pytest.MonkeyPatch.context() as mp:
        mp.setenv('GRADIO_TEMP_DIR', str(work / 'gradio'))
        web = load_script('demo/web_demo.py')
        assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False'
        from gradio_client import Client
        model = init_referring_model(tiny_config, str(ckpt))
        examples = web.make_examples(str(work / 'examples'))
        demo, url, _ = start_demo(web, model, work, examples)
        try:
            client = Client(
                url, verbose=False, download_files=str(work / 'downloads'))
            yield dict(
                client=client,
                examples=examples,
                guard=guard,
                work=work,
                web=web,
                model=model)
        finally:
            demo.close()
    assert guard.attempts == [], f'the demo tried to reach {guard.attempts}'


def test_png_example(served):
    from gradio_client import handle_file
    client, examples = served['client'], served['examples']
    path, text, bands = examples[0]
    overlay, heat, files, status = client.predict(
        handle_file(path), text, bands, api_name='/segment')
    ov = np.asarray(Image.open(overlay))
    assert ov.shape[1] == 256 and ov.shape[0] > 256  # 128 px enlarged
    assert np.asarray(Image.open(heat)).shape == ov.shape
    names = [os.path.basename(f) for f in files]
    assert names == ['scene_0_mask.png']  # not georeferenced: PNG only
    mask = np.asarray(Image.open(files[0]))
    assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
    assert f'"{text}"' in status and 'pixels' in status


def test_geotiff_example_downloads_georeferenced_mask(served):
    from gradio_client import handle_file
    client, examples = served['client'], served['examples']
    path, text, bands = examples[-1]
    assert path.endswith('.tif') and bands == '3 2 1'
    _, _, files, status = client.predict(
        handle_file(path), text, bands, api_name='/segment')
    exts = sorted(os.path.splitext(f)[1] for f in files)
    assert exts == ['.geojson', '.png', '.qml', '.tif']
    tif = next(f for f in files if f.endswith('.tif'))
    # the QGIS style of that GeoTIFF, downloadable beside it
    qml = next(f for f in files if f.endswith('.qml'))
    assert os.path.splitext(os.path.basename(qml))[0] == \
        os.path.splitext(os.path.basename(tif))[0]
    assert 'type="paletted"' in open(qml).read()
    with rasterio.open(path) as src, rasterio.open(tif) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.read(1)[:, :6] == 255).all()  # the nodata strip
    assert 'stretched 2-98 %' in status and 'nodata' in status


#: Bytes of the server file the crafted VRTs read.
SECRET = b'TOP-SECRET 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNO'


def raw_band_vrt(path, target, size=8):
    """A VRT whose one band is the bytes of ``target``, read raw."""
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">'
        '<VRTRasterBand dataType="Byte" band="1" '
        'subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{target}</SourceFilename>'
        '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>'
        f'<LineOffset>{size}</LineOffset></VRTRasterBand></VRTDataset>')
    return path


#: Refused when the request arrives, before it waits in the queue (the
#: demo's validator): "- <parameter>: <message>".
AT_ONCE = 'validation'
#: Refused when the request's turn comes (the file had to be read).
IN_TURN = 'app'
#: Refused by Gradio as the request arrives (HTTP 400 from its queue): an
#: upload name outside the file types of the page.
BY_NAME = 'http'


@pytest.mark.parametrize('case, when, expected', [
    ('empty', AT_ONCE, '- text: expression: the expression is empty'),
    ('html_space', AT_ONCE, 'empty after ftfy / HTML clean-up'),
    ('too_long', AT_ONCE, '- text: expression: the expression is too long '
     '(50000 characters, at most 300)'),
    ('corrupt', IN_TURN, 'broken.tif starts like a GeoTIFF / TIFF file but '
     'GDAL cannot read it as one'),
    ('vrt_as_tif', AT_ONCE, '- path: evil.tif is refused: it is a VRT (it '
     'names other files or URLs for the server to read); upload a GeoTIFF / '
     'TIFF, PNG or JPEG file'),
    ('vrt', BY_NAME, 'Invalid file type'),
    ('html', AT_ONCE, '- path: page.tif is refused: it is an XML / HTML '
     'file'),
    ('no_bands', IN_TURN, 'bands=(3, 2, 1)'),
    ('bad_bands', AT_ONCE, '- bands_text: bands must be'),
    ('no_file', AT_ONCE, '- path: upload an image first'),
])
def test_errors_are_messages_not_traces(served, case, when, expected):
    import httpx
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError, ValidationError
    client, examples, work = (served['client'], served['examples'],
                              served['work'])
    png, tif = examples[0][0], examples[-1][0]
    broken = work / 'broken.tif'
    broken.write_bytes(b'II*\x00' + b'not a tiff' * 10)
    secret = work / 'secret.txt'
    secret.write_bytes(SECRET)
    page = work / 'page.tif'
    page.write_text('<html><script>alert(1)</script></html>')
    args = dict(
        empty=(handle_file(png), '   ', ''),
        html_space=(handle_file(png), '&nbsp;&amp;nbsp;', ''),
        too_long=(handle_file(png), 'a' * 50_000, ''),
        corrupt=(handle_file(str(broken)), 'the red circle', ''),
        vrt_as_tif=(handle_file(str(raw_band_vrt(work / 'evil.tif', secret))),
                    'the red circle', '1'),
        vrt=(handle_file(str(raw_band_vrt(work / 'evil.vrt',
                                          secret))), 'the red circle', '1'),
        html=(handle_file(str(page)), 'the red circle', ''),
        no_bands=(handle_file(tif), 'the red circle', ''),
        bad_bands=(handle_file(tif), 'the red circle', '3 x 1'),
        no_file=(None, 'the red circle', ''))[case]
    error = dict(
        validation=ValidationError, app=AppError,
        http=httpx.HTTPStatusError)[when]
    with pytest.raises(error) as exc:
        client.predict(*args, api_name='/segment')
    msg = exc.value.response.text if when == BY_NAME else str(exc.value)
    assert expected in msg
    assert 'Traceback' not in msg and '/tmp/' not in msg


def test_second_expression_on_an_image_reuses_its_embeddings(served):
    from gradio_client import handle_file
    client, examples = served['client'], served['examples']
    path, text, bands = examples[-1]
    statuses = [
        client.predict(handle_file(path), t, bands, api_name='/segment')[3]
        for t in (text, 'the red circle', text)
    ]
    # the first request may find the image cached by an earlier test
    assert 'image encoded in' in statuses[0] or \
        'image from cache' in statuses[0]
    assert 'image from cache' in statuses[1]
    assert 'image from cache' in statuses[2]
    assert all('answered in' in s for s in statuses)


def mask_of(files):
    """The 0/255 PNG mask among the downloaded files."""
    png = next(f for f in files if f.endswith('_mask.png'))
    return np.asarray(Image.open(png))


def test_parallel_clients_get_their_own_results(served):
    """8 requests from 4 clients at once (PNGs and the 4-band GeoTIFF, each
    with its own expression): every answer is the one of its own request,
    as the model gives it for that image and expression."""
    from gradio_client import Client, handle_file

    from rsrefseg_mm.apis import inference_referring
    examples, work = served['examples'], served['work']
    url = served['client'].src
    texts = [
        'the red circle', 'the white object', 'the cross', 'the blue square'
    ]
    jobs = [(examples[i % 4][0], texts[i // 2 % 4], examples[i % 4][2])
            for i in range(8)]

    def ask(job):
        own = Client(url, verbose=False, download_files=str(work / 'parallel'))
        _, _, files, status = own.predict(
            handle_file(job[0]), job[1], job[2], api_name='/segment')
        return mask_of(files), status

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, jobs))
    masks = [m for m, _ in answers]
    # mixing would show: the four images get different masks
    assert len({m.tobytes() for m in masks[:4]}) == 4
    for (path, text, bands), (mask, status) in zip(jobs, answers):
        assert f'"{text}"' in status
        assert os.path.basename(path) in status
        want = inference_referring(
            served['model'], path, text, bands=(3, 2, 1) if bands else None)
        want = want.pred_sem_seg.data[0].numpy().astype(np.uint8) * 255
        np.testing.assert_array_equal(mask, want)


def test_uploads_over_the_limit_are_refused(served):
    """The client refuses before sending; the server answers 413 with a
    message to a client that sends anyway."""
    import httpx
    from gradio_client import handle_file
    client, work = served['client'], served['work']
    big = work / 'big.tif'
    big.write_bytes(b'\0' * (2**20 + 1))  # 1mb is 2**20 bytes
    with pytest.raises(ValueError, match='exceeds the maximum file size'):
        client.predict(
            handle_file(str(big)), 'the red circle', '', api_name='/segment')
    with open(big, 'rb') as f:
        resp = httpx.post(client.upload_url, files=[('files', ('big.tif', f))])
    assert resp.status_code == 413
    assert 'maximum allowed size of 1048576 bytes' in resp.text
    assert not list((work / 'gradio').rglob('big.tif'))


def files_under(root):
    return [
        Path(folder) / name for folder, _, names in os.walk(root)
        for name in names
    ]


def held(root):
    """Files under ``root`` that hold data."""
    return [path for path in files_under(root) if path.stat().st_size]


class Clock:
    """``time.time()`` plus :attr:`ahead` seconds (the cache sweep's)."""

    def __init__(self):
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


def test_thirty_requests_leave_a_bounded_number_of_files(
        served, tmp_path, monkeypatch):
    """A demo of its own, keeping 4 result folders: 30 requests (4
    different uploads, 30 expressions) each write into a folder of their
    own, named at random, and the last 4 stay. Once Gradio has deleted the
    files of its cache (its ``delete_cache`` pass, run here rather than
    waited for) and the sweep's clock is past the cache period, one more
    request leaves its own files in the cache only."""
    from gradio.route_utils import delete_files_created_by_app
    from gradio_client import Client, handle_file
    web, examples = served['web'], served['examples']
    cache = tmp_path / 'gradio'
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(cache))
    ttl, keep, clock = 3600, 4, Clock()
    demo, url, _ = start_demo(
        web,
        served['model'],
        tmp_path,
        cache_ttl=ttl,
        keep_results=keep,
        clock=clock)
    out = tmp_path / 'out'
    try:
        client = Client(
            url, verbose=False, download_files=str(tmp_path / 'downloads'))

        def ask(i):
            path, _, bands = examples[i % len(examples)]
            return client.predict(
                handle_file(path),
                f'the object {i}',
                bands,
                api_name='/segment')

        names = []
        for i in range(30):
            before = set(os.listdir(out)) if out.exists() else set()
            ask(i)
            after = set(os.listdir(out))
            new, = after - before  # one folder per request
            names.append(new)
            assert len(after) == min(i + 1, keep)
        assert len(set(names)) == 30
        assert not any(n.isdigit() for n in names) and names != sorted(names)
        # our folders: the last 4 requests' files, at most 6 each
        assert len(files_under(out)) <= keep * 6
        during = len(list(cache.rglob('*')))
        assert held(cache)  # uploads and served copies, within the period
        delete_files_created_by_app(demo, age=None)
        assert held(cache) == []
        leftovers = len(list(cache.iterdir()))  # empty folders and files
        assert leftovers > 2 * 7 + 1
        clock.ahead = ttl + 1  # the sweep after the next request sees them
        ask(30)  # old and removes them
        left = list(cache.rglob('*'))
        # the last request: one upload, two images, at most 4 downloads,
        # each in a folder, and one empty temporary file of gr.File
        print(f'30 requests: {during} entries in the Gradio cache, '
              f'{len(files_under(out))} files in the outputs; after '
              f"Gradio's deletion {leftovers} empty entries, after one more "
              f'request a cache period later: {len(left)} entries')
        assert len(left) <= 2 * 7 + 1 < during
        assert len(files_under(out)) <= keep * 6
    finally:
        demo.close()


def test_url_vrt_sends_no_request(served):
    """A VRT (named .tif) reading its band from an HTTP server on
    127.0.0.1: refused by its content as the request arrives, in the
    segmentation itself and in the preview, and the server receives no
    request."""
    from gradio_client import handle_file
    from gradio_client.exceptions import ValidationError
    work = served['work']
    with recording_http_server() as (port, requests):
        vrt = work / 'remote.tif'
        vrt.write_text(
            '<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand '
            'dataType="Byte" band="1"><SimpleSource><SourceFilename '
            f'relativeToVRT="0">/vsicurl/http://127.0.0.1:{port}/scene.tif'
            '</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
            '</VRTRasterBand></VRTDataset>')
        with pytest.raises(
                ValidationError, match='remote.tif is refused: it is a VRT'):
            served['client'].predict(
                handle_file(str(vrt)),
                'the red circle',
                '1',
                api_name='/segment')
        # past the validator (an API client calling the function)
        predictor = served['web'].WebPredictor(served['model'],
                                               str(work / 'direct_out'))
        with pytest.raises(
                served['web'].gr.Error,
                match='remote.tif is refused: it is a VRT'):
            predictor.segment(str(vrt), 'the red circle', '1')
        image, status = predictor.preview(str(vrt), '1')
        assert image is None
        assert status.startswith('**remote.tif is refused: it is a VRT')
    assert requests == []


def test_preview_shows_no_server_file(served, tmp_path):
    """The preview of a VRT reading a server file raw (the bytes would be
    its pixels) is a message; a GeoTIFF beside a .ovr of other pixels is
    shown with its own."""
    import rasterio
    web = served['web']
    predictor = web.WebPredictor(served['model'], str(tmp_path / 'out'))
    secret = tmp_path / 'secret.txt'
    secret.write_bytes(SECRET)
    for name in ('evil.tif', 'evil.png', 'evil.jpg'):
        image, status = predictor.preview(
            str(raw_band_vrt(tmp_path / name, secret)), '1')
        assert image is None
        assert status == (
            f'**{name} is refused: it is a VRT (it names other files or URLs '
            'for the server to read); upload a GeoTIFF / TIFF, PNG or JPEG '
            'file**')
    upload = tmp_path / 'scene.tif'
    for path, size, value in ((upload, 512, 10), (tmp_path / 'scene.tif.ovr',
                                                  256, 250)):
        with rasterio.open(
                path,
                'w',
                driver='GTiff',
                width=size,
                height=size,
                count=1,
                dtype='uint8') as dst:
            dst.write(np.full((1, size, size), value, np.uint8))
    image, status = predictor.preview(str(upload), '1')
    assert image.shape[:2] == (256, 256)  # read decimated: .ovr-sized
    assert (image == 10).all(), 'the side-car overview was read'
    assert 'scene.tif: 256 x 256 px read from 512 x 512 px' in status


def test_uploaded_html_is_served_as_a_download(served):
    """HTML and SVG sent to Gradio's upload route come back from its file
    route as downloads (octet-stream, attachment, nosniff, sandbox), also
    here where the upload folder is inside an allowed path (where Gradio
    alone would serve them inline); a PNG is still shown."""
    import httpx
    client, work = served['client'], served['work']
    png = open(served['examples'][0][0], 'rb').read()
    files = [
        ('files', ('page.html', b'<script>alert(document.cookie)</script>',
                   'text/html')),
        ('files', ('logo.svg', b'<svg xmlns="http://www.w3.org/2000/svg" '
                   b'onload="alert(1)"/>', 'image/svg+xml')),
        ('files', ('script.js', b'alert(1)', 'text/javascript')),
        ('files', ('scene.png', png, 'image/png')),
    ]
    resp = httpx.post(client.upload_url, files=files)
    assert resp.status_code == 200, resp.text
    paths = resp.json()
    base = client.src.rstrip('/')
    for path, (_, (name, body, _)) in zip(paths, files):
        assert Path(path).is_relative_to(work)  # an allowed path
        for method in ('GET', 'HEAD'):
            got = httpx.request(method, f'{base}/gradio_api/file={path}')
            assert got.status_code == 200, (name, got.text)
            headers = got.headers
            assert headers['x-content-type-options'] == 'nosniff'
            assert headers['content-security-policy'] == \
                "default-src 'none'; sandbox"
            if name.endswith('.png'):
                assert headers['content-type'] == 'image/png'
                assert not headers.get('content-disposition',
                                       '').startswith('attachment')
            else:
                assert headers['content-type'] == 'application/octet-stream'
                assert headers['content-disposition'].startswith('attachment')
            if method == 'GET':
                assert got.content == body


class Gate:
    """Stands for the predictor's lock: tells when a request is inside and
    holds it until opened."""

    def __init__(self):
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __enter__(self):
        self.entered.set()
        assert self.opened.wait(120), 'the test never opened the gate'
        return self

    def __exit__(self, *exc):
        return False


def test_queue_holds_max_queue_requests(served, tmp_path, monkeypatch):
    """With max_queue=1: while a request runs, one more may wait and the
    next is refused with "Queue is full". A too long expression sent while
    a request runs is refused at once (the validator runs before the
    queue)."""
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import ValidationError
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))
    demo, url, predictor = start_demo(
        served['web'], served['model'], tmp_path, max_queue=1)
    gate = predictor.lock = Gate()
    try:
        client = Client(
            url, verbose=False, download_files=str(tmp_path / 'downloads'))
        png = served['examples'][0][0]
        first = client.submit(
            handle_file(png), 'the red circle', '', api_name='/segment')
        assert gate.entered.wait(120)  # the first request is running
        # a too long expression is answered now, not in its turn
        with pytest.raises(ValidationError, match='too long'):
            client.predict(
                handle_file(png), 'a' * 50_000, '', api_name='/segment')
        base = url.rstrip('/')
        with open(png, 'rb') as f:
            uploaded, = httpx.post(
                f'{base}/gradio_api/upload',
                files=[('files', ('scene_0.png', f))]).json()
        fn_index = next(d['id'] for d in client.config['dependencies']
                        if d.get('api_name') == 'segment')
        body = dict(
            data=[
                dict(
                    path=uploaded,
                    orig_name='scene_0.png',
                    meta={'_type': 'gradio.FileData'}), 'the white cross', ''
            ],
            fn_index=fn_index,
            session_hash='queue-test',
            event_data=None,
            trigger_id=None)
        join = f'{base}/gradio_api/queue/join'
        waiting = httpx.post(join, json=body)
        assert waiting.status_code == 200 and waiting.json()['event_id']
        refused = httpx.post(join, json=body)
        assert refused.status_code == 503
        assert 'Queue is full. Max size is 1' in refused.text
        gate.opened.set()
        _, _, files, status = first.result(timeout=120)
        assert '"the red circle"' in status
    finally:
        gate.opened.set()
        demo.close()


def test_main_serves_the_examples_and_outputs_not_the_cache(
        served, tmp_path, monkeypatch):
    """main() lets Gradio serve files from the examples and outputs
    folders only: an upload in Gradio's cache (under the work folder) is
    a file Gradio "created", which it serves inline only when it is a
    passive type, not an "allowed" one it would serve as it is; uploads
    are read from copies under <work-dir>/uploads."""
    from gradio.utils import is_allowed_file
    web = served['web']
    seen = {}

    class Recording(web.WebPredictor):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen['predictor'] = self

    monkeypatch.delenv('GRADIO_TEMP_DIR')
    monkeypatch.setattr(web, 'WebPredictor', Recording)
    monkeypatch.setattr(web, 'init_referring_model',
                        lambda *args, **kwargs: served['model'])
    monkeypatch.setattr(web, 'launch',
                        lambda demo, host, port, **kwargs: seen.update(kwargs))
    work = tmp_path / 'work'
    web.main([
        'config.py', 'model.pth', '--work-dir',
        str(work), '--max-queue', '5', '--max-expression-chars', '40'
    ])
    assert seen['allowed_paths'] == [
        str(work / 'examples'), str(work / 'outputs')
    ]
    assert seen['max_queue'] == 5 and seen['predictor'].max_chars == 40
    assert seen['predictor'].guard.root == str(work / 'uploads')
    upload = work / 'gradio' / 'abc' / 'page.html'
    assert os.environ['GRADIO_TEMP_DIR'] == str(work / 'gradio')
    assert is_allowed_file(upload, [], seen['allowed_paths'],
                           [str(work / 'gradio')]) == (True, 'created')
    assert is_allowed_file(upload, [], [str(work)],
                           [str(work / 'gradio')]) == (True, 'allowed')
