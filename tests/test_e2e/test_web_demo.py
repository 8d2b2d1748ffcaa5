"""demo/web_demo.py served on 127.0.0.1 and driven over real HTTP by
gradio_client, with every non-loopback connection refused and recorded:
results, errors, parallel clients, the upload limit and the files left on
disk by a stream of requests."""
import os
import socket
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
from helpers import free_port, load_script

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


def start_demo(web, model, work, examples=(), **kwargs):
    """Build and launch a demo on a free loopback port; (demo, url)."""
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
        max_upload_size=MAX_UPLOAD)
    assert url.startswith(f'http://127.0.0.1:{port}')
    return demo, url


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
        demo, url = start_demo(web, model, work, examples)
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


@pytest.mark.parametrize('case, expected', [
    ('empty', 'the expression is empty'),
    ('html_space', 'empty after ftfy / HTML clean-up'),
    ('corrupt', 'cannot read or decode image broken.tif'),
    ('no_bands', 'bands=(3, 2, 1)'),
    ('bad_bands', 'bands must be'),
    ('no_file', 'upload an image first'),
])
def test_errors_are_messages_not_traces(served, case, expected):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    client, examples, work = (served['client'], served['examples'],
                              served['work'])
    png, tif = examples[0][0], examples[-1][0]
    broken = work / 'broken.tif'
    broken.write_bytes(b'II*\x00' + b'not a tiff' * 10)
    args = dict(
        empty=(handle_file(png), '   ', ''),
        html_space=(handle_file(png), '&nbsp;&amp;nbsp;', ''),
        corrupt=(handle_file(str(broken)), 'the red circle', ''),
        no_bands=(handle_file(tif), 'the red circle', ''),
        bad_bands=(handle_file(tif), 'the red circle', '3 x 1'),
        no_file=(None, 'the red circle', ''))[case]
    with pytest.raises(AppError) as exc:
        client.predict(*args, api_name='/segment')
    msg = str(exc.value)
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
    demo, url = start_demo(
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
