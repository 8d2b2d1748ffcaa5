"""demo/web_demo.py served on 127.0.0.1 and driven over real HTTP by
gradio_client, with every non-loopback connection refused and recorded."""
import os
import socket

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


@pytest.fixture(scope='module')
def served(tmp_path_factory, tiny_config):
    """(client, examples, guard, work dir) of a running demo."""
    work = tmp_path_factory.mktemp('web')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    net = MODELS.build(Config.fromfile(tiny_config).model)
    ckpt = work / 'tiny.pth'
    torch.save(dict(state_dict=net.state_dict(), meta=dict()), ckpt)
    with NetworkGuard() as guard:
        web = load_script('demo/web_demo.py')
        assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False'
        from gradio_client import Client
        model = init_referring_model(tiny_config, str(ckpt))
        examples = web.make_examples(str(work / 'examples'))
        demo = web.build_demo(web.WebPredictor(model, str(work / 'out')),
                              examples)
        port = free_port()
        _, url, _ = web.launch(demo, '127.0.0.1', port, [str(work)],
                               block=False)
        assert url.startswith(f'http://127.0.0.1:{port}')
        try:
            client = Client(url, verbose=False, download_files=str(
                work / 'downloads'))
            yield client, examples, guard, work
        finally:
            demo.close()
    assert guard.attempts == [], f'the demo tried to reach {guard.attempts}'


def test_png_example(served):
    from gradio_client import handle_file
    client, examples, _, _ = served
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
    client, examples, _, _ = served
    path, text, bands = examples[-1]
    assert path.endswith('.tif') and bands == '3 2 1'
    _, _, files, status = client.predict(handle_file(path), text, bands,
                                         api_name='/segment')
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
    client, examples, _, work = served
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
    client, examples, _, _ = served
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


def test_two_clients_get_their_own_images(served, tiny_config):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file
    client, examples, _, work = served
    url = client.src
    jobs = [(examples[i % 3][0], examples[i % 3][1]) for i in range(6)]

    def ask(job):
        own = Client(url, verbose=False,
                     download_files=str(work / f'dl_{os.getpid()}'))
        _, _, files, _ = own.predict(handle_file(job[0]), job[1], '',
                                     api_name='/segment')
        return np.asarray(Image.open(files[0]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        masks = list(pool.map(ask, jobs))
    # mixing would show: the three images get different masks
    assert len({m.tobytes() for m in masks[:3]}) == 3
    model = init_referring_model(tiny_config, str(work / 'tiny.pth'))
    from rsrefseg_mm.apis import inference_referring
    for (path, text), mask in zip(jobs, masks):
        want = inference_referring(model, path, text)
        want = want.pred_sem_seg.data[0].numpy().astype(np.uint8) * 255
        np.testing.assert_array_equal(mask, want)
