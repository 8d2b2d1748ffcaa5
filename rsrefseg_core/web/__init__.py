"""What a web server open to strangers for weeks (``demo/web_demo.py``)
needs besides the model: a folder of its own per request, of which the last
few are kept; the sweep of the empty entries Gradio's file cache leaves
behind; uploads read only as GeoTIFF, PNG or JPEG files of their own, with
GDAL kept from following paths and URLs; served files that never run in
the page's origin; and the last uploaded scene, segmented at the file's
resolution, kept for follow-up expressions."""
from .cache_sweeper import CacheSweeper
from .file_headers import FileHeaders
from .result_folders import ResultFolders
from .scene_session import MAX_SCENE_WINDOWS, SceneSession
from .upload_guard import SAFE_GDAL_OPTIONS, UploadGuard

__all__ = [
    'CacheSweeper', 'FileHeaders', 'MAX_SCENE_WINDOWS', 'ResultFolders',
    'SAFE_GDAL_OPTIONS', 'SceneSession', 'UploadGuard'
]
