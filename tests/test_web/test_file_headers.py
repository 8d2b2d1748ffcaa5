"""rsrefseg_core.web.FileHeaders: answers of file routes show images only;
HTML, SVG, scripts and XML become downloads with nosniff and a sandboxing
Content-Security-Policy; other routes are left as they are."""
import asyncio

import pytest

from rsrefseg_core.web import FileHeaders
from rsrefseg_core.web.file_headers import FILE_CSP, file_headers


def file_app(content_type, disposition=None):
    """An ASGI app answering ``<html>`` with these headers."""

    async def app(scope, receive, send):
        headers = [(b'content-type', content_type.encode()),
                   (b'content-length', b'6')]
        if disposition is not None:
            headers.append((b'content-disposition', disposition.encode()))
        await send(
            dict(type='http.response.start', status=200, headers=headers))
        await send(dict(type='http.response.body', body=b'<html>'))

    return app


def call(app, path):
    """(headers as a dict, body) of a GET of ``path``."""
    sent = []

    async def receive():
        return dict(type='http.request', body=b'', more_body=False)

    async def send(message):
        sent.append(message)

    scope = dict(type='http', method='GET', path=path, headers=[])
    asyncio.run(app(scope, receive, send))
    start, body = sent
    return dict(start['headers']), body['body']


@pytest.mark.parametrize('content_type', [
    'text/html; charset=utf-8', 'image/svg+xml', 'text/javascript',
    'application/xml', 'text/xml', 'application/xhtml+xml', 'text/plain',
    'image/tiff', 'application/geo+json'
])
@pytest.mark.parametrize('path', [
    '/gradio_api/file=/tmp/gradio/abc/page.html',
    '/gradio_api/file/tmp/gradio/abc/page.html',
    '/gradio_api/proxy=https://x/page.html',
    '/prefix/gradio_api/file=/tmp/page.html',
])
def test_active_content_becomes_a_download(content_type, path):
    app = FileHeaders(file_app(content_type, 'inline; filename="page.html"'))
    headers, body = call(app, path)
    assert headers[b'content-type'] == b'application/octet-stream'
    assert headers[b'content-disposition'] == \
        b'attachment; filename="page.html"'
    assert headers[b'x-content-type-options'] == b'nosniff'
    assert headers[b'content-security-policy'] == FILE_CSP
    assert headers[b'content-length'] == b'6' and body == b'<html>'


@pytest.mark.parametrize(
    'content_type', ['image/png', 'image/jpeg', 'IMAGE/PNG', 'image/webp'])
def test_images_stay_inline(content_type):
    app = FileHeaders(file_app(content_type, 'inline; filename="a.png"'))
    headers, _ = call(app, '/gradio_api/file=/tmp/gradio/abc/a.png')
    assert headers[b'content-type'] == content_type.encode()
    assert headers[b'content-disposition'] == b'inline; filename="a.png"'
    assert headers[b'x-content-type-options'] == b'nosniff'
    assert headers[b'content-security-policy'] == FILE_CSP


def test_other_routes_are_untouched():
    app = FileHeaders(file_app('text/html; charset=utf-8'))
    headers, _ = call(app, '/')
    assert headers == {
        b'content-type': b'text/html; charset=utf-8',
        b'content-length': b'6'
    }


def test_headers_set_by_the_app_are_replaced_not_doubled():
    headers = file_headers([
        (b'Content-Type', b'text/html'),
        (b'X-Content-Type-Options', b'sniff'),
        (b'Content-Security-Policy', b"script-src 'unsafe-inline'"),
        (b'Content-Disposition', b'inline'),
    ])
    names = [name for name, _ in headers]
    assert sorted(names) == sorted({name for name in names})
    assert dict(headers) == {
        b'content-type': b'application/octet-stream',
        b'content-disposition': b'attachment',
        b'x-content-type-options': b'nosniff',
        b'content-security-policy': FILE_CSP,
    }


def test_missing_content_type_and_disposition():
    assert dict(file_headers([])) == {
        b'content-type': b'application/octet-stream',
        b'content-disposition': b'attachment',
        b'x-content-type-options': b'nosniff',
        b'content-security-policy': FILE_CSP,
    }


def test_websockets_and_lifespan_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope['type'])

    for kind in ('websocket', 'lifespan'):
        asyncio.run(
            FileHeaders(app)(dict(type=kind, path='/gradio_api/file=x'), None,
                             None))
    assert seen == ['websocket', 'lifespan']
