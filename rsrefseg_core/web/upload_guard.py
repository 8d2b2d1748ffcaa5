"""Uploads from strangers, read so that no path or URL inside them is
followed.

GDAL opens far more than images: a VRT is an XML file naming other files
to read (any local file, read raw as pixels) or URLs (``/vsicurl/``,
``/vsis3/`` ...: the server sends the requests), and GeoTIFF / PNG / JPEG
readers look for side-car files beside the upload (``.ovr`` overviews,
``.aux.xml``, ``.msk``, world files). :class:`UploadGuard` lets only three
formats through, recognised by their first bytes (not by the name the
visitor gave): GeoTIFF / TIFF (BigTIFF too), PNG and JPEG; it links the
upload into a folder of its own under a fixed name (so no side-car can sit
beside it), opens it with GDAL restricted to the format's driver and checks
that GDAL read that one file, and keeps GDAL's network file systems and
directory listings off while the upload is read (:data:`SAFE_GDAL_OPTIONS`).
"""
import contextlib
import os
import os.path as osp
import shutil
import tempfile
import warnings
from typing import Iterator, Optional

from ..geo.reader import require_rasterio

#: GDAL driver of each accepted format -> (its name in messages, the
#: extension of the private copy).
UPLOAD_FORMATS = {
    'GTiff': ('GeoTIFF / TIFF', '.tif'),
    'PNG': ('PNG', '.png'),
    'JPEG': ('JPEG', '.jpg'),
}
#: Leading bytes of each accepted format (TIFF and BigTIFF in both byte
#: orders, PNG, JPEG).
MAGIC_BYTES = (
    (b'II*\x00', 'GTiff'),
    (b'MM\x00*', 'GTiff'),
    (b'II+\x00', 'GTiff'),
    (b'MM\x00+', 'GTiff'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'\xff\xd8\xff', 'JPEG'),
)
#: Start of the name of the folder of each private copy.
FOLDER_PREFIX = 'upload_'
#: Bytes read to recognise a refused format by name.
HEAD_BYTES = 1024
#: GDAL configuration while an upload is opened and read.
SAFE_GDAL_OPTIONS = dict(
    # no directory listing, so no side-car file (.ovr, .aux.xml, .msk,
    # world files, .IMD / .RPB metadata) is looked for
    GDAL_DISABLE_READDIR_ON_OPEN='EMPTY_DIR',
    # no .aux.xml read or written beside the upload
    GDAL_PAM_ENABLED='NO',
    # /vsicurl/ and every file system built on it (/vsis3/, /vsigs/,
    # /vsiaz/, /vsiadls/, /vsioss/, /vsiswift/, /vsiwebhdfs/, streaming
    # variants) open only the file named here: none
    CPL_VSIL_CURL_ALLOWED_FILENAME='',
)


def sniff_format(head: bytes) -> Optional[str]:
    """The GDAL driver of an accepted format the bytes start, or None.

    Args:
        head (bytes): The first bytes of the file (8 are enough).

    Returns:
        str | None: ``'GTiff'``, ``'PNG'``, ``'JPEG'`` or None.
    """
    for magic, driver in MAGIC_BYTES:
        if head.startswith(magic):
            return driver
    return None


def describe_refused(head: bytes) -> str:
    """Why a file of another format is refused, for the message."""
    text = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
    if b'<vrtdataset' in text:
        return ('a VRT (it names other files or URLs for the server to '
                'read)')
    if text.startswith(b'<'):
        return 'an XML / HTML file'
    return 'in no accepted format'


def accepted_formats() -> str:
    """``'GeoTIFF / TIFF, PNG or JPEG'``."""
    names = [name for name, _ in UPLOAD_FORMATS.values()]
    return ', '.join(names[:-1]) + ' or ' + names[-1]


class UploadGuard:
    """Lets an upload be read only as a GeoTIFF, PNG or JPEG file of its
    own, with GDAL kept from following paths or URLs.

    Use :meth:`open` around everything that reads the upload::

        with guard.open(upload_path, 'scene.tif') as path:
            image = read_image(path, ...)

    Args:
        root (str, optional): Folder for the private copies (a folder per
            upload, deleted when :meth:`open` exits); on the file system of
            the uploads, a copy is a hard link. Defaults to the system's
            temporary folder.
    """

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = root
        if root is not None:
            os.makedirs(root, exist_ok=True)

    @staticmethod
    def check_format(path: str, name: str) -> str:
        """The GDAL driver of ``path``'s format, from its first bytes.

        Args:
            path (str): The upload.
            name (str): Its name in messages (the visitor's file name).

        Returns:
            str: A key of :data:`UPLOAD_FORMATS`.

        Raises:
            ValueError: For any other format, naming the file; a VRT is
                named as such.
        """
        with open(path, 'rb') as f:
            head = f.read(HEAD_BYTES)
        if not head:
            raise ValueError(f'{name} is empty')
        driver = sniff_format(head)
        if driver is None:
            raise ValueError(f'{name} is refused: it is '
                             f'{describe_refused(head)}; upload a '
                             f'{accepted_formats()} file')
        return driver

    @staticmethod
    def _verify(path: str, driver: str, name: str) -> None:
        """Open ``path`` with ``driver`` only; GDAL must read no other
        file."""
        rasterio = require_rasterio(name)
        from rasterio.errors import NotGeoreferencedWarning, RasterioError
        label = UPLOAD_FORMATS[driver][0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                with rasterio.open(path, driver=driver) as src:
                    opened, files = src.driver, list(src.files)
        except RasterioError as e:
            raise ValueError(f'{name} starts like a {label} file but GDAL '
                             f'cannot read it as one ({e})'.replace(
                                 path, name)) from None
        others = [f for f in files if osp.realpath(f) != osp.realpath(path)]
        if opened != driver or others:
            raise ValueError(f'{name} is refused: GDAL read it as {opened} '
                             f'with {len(others)} other file(s)')

    def copy(self, path: str, name: str) -> str:
        """Check the upload and make its private copy, kept until
        :meth:`release`: for an upload read over several requests (a scene
        whose windows are read again for each expression). Read it only
        inside :meth:`safe_env`.

        Args:
            path (str): The upload as the web framework stored it.
            name (str): Its name in messages.

        Returns:
            str: ``<root>/<new folder>/upload.<ext>``, the only file of its
            folder.

        Raises:
            ValueError: For a refused format (:meth:`check_format`), or a
                file GDAL does not read with that format's driver alone.
        """
        driver = self.check_format(path, name)
        folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=self.root)
        try:
            local = osp.join(folder, 'upload' + UPLOAD_FORMATS[driver][1])
            try:
                os.link(path, local)
            except OSError:  # another file system (or no hard links)
                shutil.copyfile(path, local)
            with self.safe_env(name):
                self._verify(local, driver, name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return local

    @staticmethod
    def release(local: str) -> None:
        """Delete a private copy made by :meth:`copy` (and its folder)."""
        folder = osp.dirname(local)
        if not osp.basename(folder).startswith(FOLDER_PREFIX):
            raise ValueError(f'{local} is no private copy of an upload')
        shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def safe_env(name: str = 'the upload'):
        """GDAL with :data:`SAFE_GDAL_OPTIONS` (a ``rasterio.Env``, in this
        thread)."""
        return require_rasterio(name).Env(**SAFE_GDAL_OPTIONS)

    @contextlib.contextmanager
    def open(self, path: str, name: str) -> Iterator[str]:
        """Check the upload and give a private copy to read.

        Inside the ``with`` block GDAL runs with :data:`SAFE_GDAL_OPTIONS`
        (in this thread).

        Args:
            path (str): The upload as the web framework stored it.
            name (str): Its name in messages.

        Yields:
            str: ``<root>/<new folder>/upload.<ext>``, the only file of its
            folder.

        Raises:
            ValueError: For a refused format (:meth:`check_format`), or a
                file GDAL does not read with that format's driver alone.
        """
        local = self.copy(path, name)
        try:
            with self.safe_env(name):
                yield local
        finally:
            self.release(local)


__all__ = [
    'MAGIC_BYTES', 'SAFE_GDAL_OPTIONS', 'UPLOAD_FORMATS', 'UploadGuard',
    'accepted_formats', 'sniff_format'
]
