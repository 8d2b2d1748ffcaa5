"""Response headers of the files a web server hands out: images are shown,
everything else is a download that runs nothing in the server's origin.

A server that serves what visitors upload (Gradio serves every upload back
under ``/gradio_api/file=...``) would otherwise run an uploaded HTML page,
SVG or script as if the server had written it. :class:`FileHeaders` is an
ASGI middleware (pure ASGI, no framework imported) that rewrites the
headers of those routes: a content type other than a passive image becomes
``application/octet-stream`` with ``Content-Disposition: attachment``, and
every file answer gets ``X-Content-Type-Options: nosniff`` (the browser
does not guess HTML from the bytes) and ``Content-Security-Policy:
default-src 'none'; sandbox`` (a document opened anyway runs no script and
loads nothing).
"""
import re
from typing import (Any, Awaitable, Callable, Iterable, List, MutableMapping,
                    Pattern, Tuple)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = List[Tuple[bytes, bytes]]

#: Content types shown inline: images a browser decodes, never runs (not
#: SVG, which is a document with scripts).
INLINE_TYPES = frozenset(
    {'image/png', 'image/jpeg', 'image/gif', 'image/webp'})
#: Gradio 6's routes that answer with a file: ``file=<path>``, the older
#: ``file/<path>`` and the ``proxy=<url>`` of Spaces.
GRADIO_FILE_ROUTES = re.compile(r'/gradio_api/(?:file=|file/|proxy=)')
#: Content-Security-Policy of every file answer.
FILE_CSP = b"default-src 'none'; sandbox"
#: Content type of a file sent as a download.
DOWNLOAD_TYPE = b'application/octet-stream'


def download_disposition(value: bytes) -> bytes:
    """``inline; filename="a.html"`` -> ``attachment; filename="a.html"``;
    empty -> ``attachment``."""
    return re.sub(rb'^[^;]*', b'attachment', value.strip(), count=1)


def file_headers(headers: Iterable[Tuple[bytes, bytes]],
                 inline_types=INLINE_TYPES) -> Headers:
    """The headers of a file answer, made safe.

    Args:
        headers (Iterable[tuple[bytes, bytes]]): ASGI headers (lower-case
            names).
        inline_types (Collection[str]): Content types kept inline.

    Returns:
        list[tuple[bytes, bytes]]: ``headers`` with the content type,
        disposition, ``X-Content-Type-Options`` and
        ``Content-Security-Policy`` set as the module describes.
    """
    out, replaced = [], {b'x-content-type-options', b'content-security-policy'}
    content_type, disposition = b'', b''
    for name, value in headers:
        name = name.lower()
        if name == b'content-type':
            content_type = value
        elif name == b'content-disposition':
            disposition = value
        elif name not in replaced:
            out.append((name, value))
    base = content_type.split(b';')[0].strip().lower().decode('latin-1')
    if base in inline_types:
        out.append((b'content-type', content_type))
        if disposition:
            out.append((b'content-disposition', disposition))
    else:
        out.append((b'content-type', DOWNLOAD_TYPE))
        out.append((b'content-disposition', download_disposition(disposition)))
    out.append((b'x-content-type-options', b'nosniff'))
    out.append((b'content-security-policy', FILE_CSP))
    return out


class FileHeaders:
    """ASGI middleware: safe headers on the answers of file routes.

    Args:
        app (ASGIApp): The application wrapped.
        routes (Pattern): Paths whose answers are files (searched in the
            request path). Defaults to :data:`GRADIO_FILE_ROUTES`.
        inline_types (Collection[str]): Content types kept inline. Defaults
            to :data:`INLINE_TYPES`.

    With Starlette / FastAPI (Gradio's ``launch(app_kwargs=...)`` passes
    them on)::

        app_kwargs=dict(middleware=[starlette.middleware.Middleware(
            FileHeaders)])
    """

    def __init__(self,
                 app: ASGIApp,
                 routes: Pattern = GRADIO_FILE_ROUTES,
                 inline_types=INLINE_TYPES) -> None:
        self.app = app
        self.routes = routes
        self.inline_types = inline_types

    async def __call__(self, scope: Scope, receive: Receive,
                       send: Send) -> None:
        if scope['type'] != 'http' or not self.routes.search(
                scope.get('path', '')):
            await self.app(scope, receive, send)
            return

        async def send_safe(message: Message) -> None:
            if message['type'] == 'http.response.start':
                message = dict(message)
                message['headers'] = file_headers(
                    message.get('headers', []), self.inline_types)
            await send(message)

        await self.app(scope, receive, send_safe)


__all__ = [
    'FILE_CSP', 'FileHeaders', 'GRADIO_FILE_ROUTES', 'INLINE_TYPES',
    'file_headers'
]
