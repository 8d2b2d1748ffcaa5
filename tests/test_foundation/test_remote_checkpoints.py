"""Checkpoints given as URLs or remote paths are refused before anything is
fetched, at every entry point: mmengine's loaders would download them and
unpickle them with ``weights_only=False``.

A local HTTP server on 127.0.0.1 serves a crafted checkpoint; no request
may reach it, and the fetch functions of torch.hub / urllib fail the test
if they are called.
"""
import functools
import http.server
import threading
import urllib.request

import pytest
import torch.hub
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.runner import CheckpointLoader, load_checkpoint
from torch import nn

from rsrefseg_mm.apis import init_referring_model
from rsrefseg_mm.engine import RSRefSegRunner
from rsrefseg_mm.utils import RemoteCheckpointError, safe_torch_load
from helpers import TINY_CONFIG, crafted_checkpoint, load_script

#: Remote paths of every scheme mmengine 0.10 registers (no server needed:
#: none may be contacted).
OTHER_SCHEMES = [
    's3://bucket/iter_1.pth', 'open-mmlab:s3://bucket/iter_1.pth',
    'petrel://bucket/iter_1.pth', 'pavi://model/iter_1.pth',
    'open-mmlab://resnet50_v1c', 'openmmlab://resnet50_v1c',
    'torchvision://resnet50', 'modelzoo://resnet50', 'mmcls://resnet50'
]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """``(url of a crafted checkpoint, requests received, marker)``."""
    folder = tmp_path_factory.mktemp('served')
    _, marker = crafted_checkpoint(folder)
    received = []

    class Recorder(http.server.SimpleHTTPRequestHandler):

        def do_GET(self):
            received.append(self.path)
            super().do_GET()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Recorder, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{httpd.server_address[1]}/crafted.pth'
    yield url, received, marker
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_fetch(monkeypatch):
    """Fail the test if anything tries to download."""

    def fetch(*args, **kwargs):
        raise AssertionError(f'a download was attempted: {args}')

    for name in ('load_state_dict_from_url', 'download_url_to_file'):
        monkeypatch.setattr(torch.hub, name, fetch)
    monkeypatch.setattr(urllib.request, 'urlopen', fetch)


def urls(server):
    url = server[0]
    return [url, url.replace('http://', 'https://')] + OTHER_SCHEMES


def assert_refused(call, url):
    with pytest.raises(RemoteCheckpointError) as info:
        call()
    assert str(info.value).startswith(url)
    assert 'Download the file first' in str(info.value)


def test_mmengine_loaders_refuse_every_remote_scheme(server):
    for url in urls(server):
        assert_refused(lambda: CheckpointLoader.load_checkpoint(url), url)
        assert_refused(lambda: load_checkpoint(nn.Linear(2, 1), url), url)
        assert_refused(lambda: safe_torch_load(url), url)
    _, received, marker = server
    assert received == [] and not marker.exists()


def test_pretrained_init_cfg_refuses_a_url(server):
    url, received, marker = server
    module = BaseModule(init_cfg=dict(type='Pretrained', checkpoint=url))
    assert_refused(module.init_weights, url)
    assert received == [] and not marker.exists()


@pytest.mark.parametrize('resume', [False, True])
def test_runner_load_from_refuses_a_url(server, resume, tmp_path):
    url, received, marker = server
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.update(work_dir=str(tmp_path), load_from=url, resume=resume)
    runner = RSRefSegRunner.from_cfg(cfg)
    assert_refused(runner.load_or_resume, url)
    assert received == [] and not marker.exists()


def test_test_tool_and_init_referring_model_refuse_a_url(
        server, tmp_path, monkeypatch):
    url, received, marker = server
    tool = load_script('tools/test.py')
    monkeypatch.setattr(
        'sys.argv', ['test.py', TINY_CONFIG, url, '--work-dir',
                     str(tmp_path)])
    assert_refused(tool.main, url)
    assert_refused(lambda: init_referring_model(TINY_CONFIG, url), url)
    assert received == [] and not marker.exists()
