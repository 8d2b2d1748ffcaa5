"""Web demo: upload an image, type an expression, see the mask.

    python demo/web_demo.py CONFIG CHECKPOINT [--device cpu] \
        [--host 127.0.0.1] [--port 7860]

then open http://127.0.0.1:7860. Upload a GeoTIFF, PNG or JPEG
(multispectral files need the bands shown as R G B, e.g. ``3 2 1``), type
a referring expression (at most ``--max-expression-chars`` characters) and
press *Segment*: the page shows the prediction over the image, the global
text-filter activation and offers the mask for download (a georeferenced
GeoTIFF plus GeoJSON polygons when the input was georeferenced, a PNG
otherwise). A few synthetic scenes (and one 16-bit 4-band GeoTIFF) are built
in as examples; with the checkpoint ``make demo`` leaves
(``work_dirs/demo/iter_1200.pth`` with the tiny config) they are segmented
as in the demo. A bad file or an empty expression gives a message in the
page, never a stack trace.

*Segment whole scene* segments the upload at the file's resolution instead
(sliding windows, :mod:`rsrefseg_core.scene`): the page shows the scene
with the mask drawn (longest side at most 2048 px) and offers the mask
GeoTIFF on the file's grid, its GeoJSON and the presence GeoTIFF. The
window embeddings of the last scene stay in memory (``--max-memory`` MiB,
beyond in a temporary file), so further expressions on the same upload run
the decoders only; scenes of more than ``--max-scene-windows`` windows are
refused.

Made to run for weeks (the housekeeping is :mod:`rsrefseg_core.web`): each
request writes its files into a folder of its own, named at random, and only
the last ``--keep-results`` folders are kept; Gradio's cache (uploads and the
copies it serves, under ``<work-dir>/gradio`` unless ``GRADIO_TEMP_DIR`` is
set) is swept every ``--cache-ttl`` seconds of files older than that, and
after each request of the empty entries Gradio leaves; uploads larger than
``--max-upload-size`` are refused with a message; large rasters are read at
the model's working resolution, so memory does not grow with the upload.
Concurrent requests are answered one at a time, each from its own image;
at most ``--max-queue`` wait, later ones are told the queue is full.

Safe to expose: uploads are read only when their first bytes are those of
a GeoTIFF, PNG or JPEG (a VRT, which names other files or URLs, is refused
by name), from a folder of their own and with GDAL's network file systems
and side-car look-ups off (:class:`~rsrefseg_core.web.UploadGuard`); the
files Gradio serves are images shown inline or downloads that run nothing
in the page's origin (:class:`~rsrefseg_core.web.FileHeaders`); only the
examples and the outputs are served from the work folder.

Nothing is downloaded and nothing phones home: Gradio's analytics are off,
the page uses Gradio's bundled fonts and scripts only, and the server binds
to 127.0.0.1 unless ``--host`` says otherwise.
"""
import os

# before gradio is imported: no telemetry, no hub
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import argparse  # noqa: E402
import atexit  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Callable, List, Optional, Sequence, Tuple  # noqa: E402

import gradio as gr  # noqa: E402
import huggingface_hub.constants  # noqa: E402  (a gradio dependency)
import mmcv  # noqa: E402
import numpy as np  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402  (gradio's)

from rsrefseg_core.geo import read_image  # noqa: E402
from rsrefseg_core.scene import DEFAULT_MEMORY_LIMIT  # noqa: E402
from rsrefseg_core.scene.cli import answer_line  # noqa: E402
from rsrefseg_core.text import check_expression  # noqa: E402
from rsrefseg_core.web import (MAX_SCENE_WINDOWS, CacheSweeper, FileHeaders,
                               ResultFolders, SceneSession, UploadGuard)
from rsrefseg_mm.apis import ReferringPredictor  # noqa: E402
from rsrefseg_mm.apis import (init_referring_model, render_heatmap,
                              render_overlay, save_referring_outputs)
from rsrefseg_mm.datasets import SyntheticReferringDataset  # noqa: E402
from rsrefseg_mm.utils import allow_unsafe_load  # noqa: E402

# also when huggingface_hub was imported before the variables were set
# (gradio's analytics and gradio_client's telemetry go through it)
huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True

#: Upload names the page offers (what is read is decided by the content:
#: :class:`~rsrefseg_core.web.UploadGuard`).
FILE_TYPES = ['.tif', '.tiff', '.png', '.jpg', '.jpeg']
#: Synthetic example scenes (test split, attribute expressions, like
#: ``make demo``).
NUM_EXAMPLES = 3
#: Output folders kept (those of the last requests).
KEEP_RESULTS = 8
#: Seconds Gradio keeps uploads and served copies (its ``delete_cache``).
CACHE_TTL = 3600
#: Largest upload accepted (Gradio's ``max_file_size``).
MAX_UPLOAD_SIZE = '200mb'
#: Longest expression accepted, in characters (a sentence; the text
#: towers read at most 77 tokens of it).
MAX_EXPRESSION_CHARS = 300
#: Requests that may wait in Gradio's queue; more are refused.
MAX_QUEUE = 32
USER_ERRORS = (ValueError, OSError, ImportError)


def parse_bands(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``'3 2 1'`` / ``'3,2,1'`` -> (3, 2, 1); empty -> None.

    Raises:
        ValueError: For anything but 1 or 3 positive integers.
    """
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace(',', ' ').split()
    try:
        bands = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f'bands must be band numbers such as "3 2 1", got '
                         f'"{text}"') from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ValueError(f'bands must be three band numbers (R G B, from 1) '
                         f'or one (grey), got "{text}"')
    return bands


def make_examples(out_dir: str) -> List[List[str]]:
    """Write the built-in example scenes; returns ``[file, text, bands]``.

    Three 8-bit PNG scenes and one 16-bit, 4-band (blue, green, red, NIR)
    GeoTIFF in EPSG:32633 with a nodata strip, shown with bands 3 2 1.
    They are also listed in ``examples.jsonl`` (image, text, bands).
    """
    from rsrefseg_mm.datasets.synthetic_geotiff import write_synthetic_geotiff
    os.makedirs(out_dir, exist_ok=True)
    ds = SyntheticReferringDataset(
        split='test',
        num_samples=NUM_EXAMPLES,
        img_size=128,
        num_objects=(3, 4),
        expression_types=('attribute', ))
    examples = []
    for i in range(NUM_EXAMPLES):
        info = ds.get_data_info(i)
        path = osp.join(out_dir, f'scene_{i}.png')
        mmcv.imwrite(info['img'], path)
        examples.append([path, info['text'], ''])
    path = osp.join(out_dir, 'scene_16bit_4band.tif')
    text, _ = write_synthetic_geotiff(path, NUM_EXAMPLES)
    examples.append([path, text, '3 2 1'])
    with open(osp.join(out_dir, 'examples.jsonl'), 'w') as f:
        for image, text, bands in examples:
            f.write(
                json.dumps(dict(image=image, text=text, bands=bands)) + '\n')
    return examples


class WebPredictor:
    """The demo's callbacks, independent of the page layout.

    The embeddings of the last ``cache_size`` images (keyed by the upload's
    content and bands) are kept, so a new expression on an image already
    seen runs the text tower and the decoders only. Requests are answered
    one at a time (a lock around encode + decode), so concurrent users never
    read each other's embeddings. Uploads are read through an
    :class:`~rsrefseg_core.web.UploadGuard` (GeoTIFF, PNG and JPEG only,
    from a folder of their own, GDAL following no path or URL).

    Args:
        model (nn.Module): From :func:`init_referring_model`.
        out_root (str): Folder for the per-request output folders.
        cache_size (int): Encoded images kept. Defaults to 4.
        keep_results (int): Output folders kept
            (:class:`~rsrefseg_core.web.ResultFolders`). Defaults to
            :data:`KEEP_RESULTS`.
        gradio_cache (str, optional): Gradio's cache folder, swept after
            each request (:class:`~rsrefseg_core.web.CacheSweeper`, empty
            entries older than ``cache_ttl``).
        cache_ttl (float): See ``gradio_cache``; also named in the message
            for an upload that is gone.
        clock (Callable[[], float]): The sweep's current time, in seconds
            since the epoch. Defaults to :func:`time.time`.
        upload_dir (str, optional): Folder of the uploads' private copies
            (hard links on the same file system as Gradio's cache).
            Defaults to the system's temporary folder.
        max_chars (int): Longest expression accepted, in characters.
            Defaults to :data:`MAX_EXPRESSION_CHARS`.
        scene_max_memory (int): Bytes of window embeddings of the last
            whole scene kept in memory (beyond, in a temporary file).
        max_scene_windows (int): Whole scenes of more windows are refused.
    """

    def __init__(self,
                 model,
                 out_root: str,
                 cache_size: int = 4,
                 keep_results: int = KEEP_RESULTS,
                 gradio_cache: Optional[str] = None,
                 cache_ttl: float = CACHE_TTL,
                 clock: Callable[[], float] = time.time,
                 upload_dir: Optional[str] = None,
                 max_chars: int = MAX_EXPRESSION_CHARS,
                 scene_max_memory: int = DEFAULT_MEMORY_LIMIT,
                 max_scene_windows: int = MAX_SCENE_WINDOWS) -> None:
        self.model = model
        self.folders = ResultFolders(out_root, keep_results)
        self.predictor = ReferringPredictor(model, cache_size=cache_size)
        self.lock = threading.Lock()
        self.cache_ttl = cache_ttl
        self.cache_sweeper = CacheSweeper(gradio_cache, cache_ttl,
                                          clock) if gradio_cache else None
        self.guard = UploadGuard(upload_dir)
        self.max_chars = max_chars
        # its own runtime: the whole-image predictor's cache is left alone
        self.scene = SceneSession(
            ReferringPredictor(model),
            self.guard,
            max_memory=scene_max_memory,
            max_windows=max_scene_windows)

    @staticmethod
    def _friendly(error: Exception,
                  path: Optional[str],
                  copy: Optional[str] = None) -> str:
        """The error message with the upload's temp path (and that of its
        private copy) shortened to the file's name, escaped (the page
        renders messages as HTML: ``&nbsp;`` must show as typed).
        """
        msg = str(error)
        for full in (copy, path):
            if full and path:
                msg = msg.replace(full, osp.basename(path))
        return html.escape(msg, quote=False)

    def _check_upload(self, path: Optional[str]) -> None:
        if not path:
            raise ValueError('upload an image first (PNG, JPEG or GeoTIFF)')
        if not osp.isfile(path):
            raise ValueError(
                f'{osp.basename(path)} is no longer on the server (uploads '
                f'are kept for about {self.cache_ttl:g} s): upload it again')

    def preview(self, path: Optional[str],
                bands_text: str) -> Tuple[Optional[np.ndarray], str]:
        """The uploaded image as the model will see it, and a summary.

        Problems (e.g. a multispectral file without bands yet, a refused
        format) are returned as text, not raised: the user may still be
        filling in the form.
        """
        if not path:
            return None, ''
        copy = None
        try:
            self._check_upload(path)
            name = osp.basename(path)
            with self.guard.open(path, name) as copy:
                image = read_image(
                    copy,
                    parse_bands(bands_text),
                    name=name,
                    max_size=self.predictor.max_read_size)
        except USER_ERRORS as e:
            return None, f'**{self._friendly(e, path, copy)}**'
        return image.img[..., ::-1], image.describe()

    def _sweep_cache(self) -> None:
        """Sweep Gradio's cache; a failure is reported on the console and
        the answer is still given."""
        if self.cache_sweeper is None:
            return
        try:
            self.cache_sweeper.sweep()
        except OSError:
            traceback.print_exc()

    def _check_text(self, text) -> str:
        """The expression stripped; raises ValueError when it is empty or
        longer than :attr:`max_chars`."""
        return check_expression(text, 'expression', max_chars=self.max_chars)

    def validate(self, path: Optional[str], text: str,
                 bands_text: str) -> List[dict]:
        """The checks made as a request arrives, before it waits in the
        queue (Gradio's ``validator``): a refused upload, an empty or too
        long expression and malformed bands are answered at once, whatever
        the queue holds. Each is cheap: the first kilobyte of the upload is
        read, and the expression's length is checked before it is
        cleaned.

        Returns:
            list[dict]: ``gr.validate`` for the upload, the expression and
            the bands.
        """

        def upload():
            self._check_upload(path)
            self.guard.check_format(path, osp.basename(path))

        results = []
        for check in (upload, lambda: self._check_text(text),
                      lambda: parse_bands(bands_text)):
            try:
                check()
                results.append(gr.validate(True, ''))
            except USER_ERRORS as e:
                results.append(gr.validate(False, self._friendly(e, path)))
        return results

    def segment(
            self, path: Optional[str], text: str,
            bands_text: str) -> Tuple[np.ndarray, np.ndarray, List[str], str]:
        """Segment the expression's object in the uploaded image.

        Returns:
            tuple: overlay (RGB), heat map (RGB), the mask files to
            download and a Markdown summary.

        Raises:
            gradio.Error: With a readable message for a bad or refused
                file, bad bands, or an empty or too long expression.
        """
        copy = None
        try:
            text = self._check_text(text)
            self._check_upload(path)
            name = osp.basename(path)
            with self.guard.open(path, name) as copy, self.lock:
                start = time.perf_counter()
                image = self.predictor.set_image(
                    copy, parse_bands(bands_text), name=name)
                cached = self.predictor.from_cache
                encoded = time.perf_counter()
                result = self.predictor.predict(text)
                answered = time.perf_counter()
            stem = osp.splitext(name)[0]
            paths = save_referring_outputs(image, result, text,
                                           self.folders.new(), stem)
        except USER_ERRORS as e:
            raise gr.Error(
                self._friendly(e, path, copy), print_exception=False)
        except Exception as e:  # a bug: full report on the console only
            traceback.print_exc()
            raise gr.Error(
                f'internal error ({type(e).__name__}); see the '
                'server log',
                print_exception=False)
        self._sweep_cache()
        mask = result.pred_sem_seg.data[0].numpy()
        files = [
            paths[k] for k in ('geotiff', 'qgis_style', 'geojson', 'mask')
            if k in paths
        ]
        timing = 'image from cache' if cached else \
            f'image encoded in {encoded - start:.1f} s'
        status = (f'{image.describe()}\n\n**"{text}"**: {int(mask.sum())} '
                  f'pixels ({100 * mask.mean():.1f} %) predicted as the '
                  f'target ({timing} · answered in {answered - encoded:.1f} '
                  's)')
        if image.georeferenced:
            status += '; the GeoTIFF / GeoJSON open in QGIS at their place'
        return (render_overlay(image, result,
                               text), render_heatmap(image, result,
                                                     text), files, status)

    def segment_scene(
            self, path: Optional[str], text: str,
            bands_text: str) -> Tuple[np.ndarray, None, List[str], str]:
        """Segment the expression's object in the whole uploaded scene at
        the file's resolution (sliding windows). The scene's window
        embeddings are kept: a new expression on the same upload (same
        content and bands) is answered without encoding it again.

        Returns:
            tuple: The overview (RGB: the scene, longest side at most
            2048 px, with the mask), None (no heat map), the files to
            download (mask GeoTIFF on the file's grid, its QGIS style, the
            GeoJSON, the presence GeoTIFF) and a Markdown summary.

        Raises:
            gradio.Error: With a readable message for a bad or refused
                file, bad bands, a scene of too many windows, or an empty
                or too long expression.
        """
        try:
            text = self._check_text(text)
            self._check_upload(path)
            name = osp.basename(path)
            with self.lock:
                start = time.perf_counter()
                encoded = self.scene.open(path, name, parse_bands(bands_text))
                answer = self.scene.answer(text, self.folders.new(),
                                           osp.splitext(name)[0])
                seconds = time.perf_counter() - start
        except USER_ERRORS as e:
            raise gr.Error(
                self._friendly(e, path, self.scene.reading),
                print_exception=False)
        except Exception as e:  # a bug: full report on the console only
            traceback.print_exc()
            raise gr.Error(
                f'internal error ({type(e).__name__}); see the '
                'server log',
                print_exception=False)
        self._sweep_cache()
        overview = mmcv.imread(answer.overview_path, channel_order='rgb')
        files = [
            answer.files[k]
            for k in ('mask', 'qgis_style', 'geojson', 'presence')
            if k in answer.files
        ]
        threshold = self.scene.scene.presence_threshold
        lines = [
            f'{name}: ' +
            (encoded or f'{len(self.scene.scene.grid)} windows already '
             'encoded (kept in memory)'),
            f'{answer_line(answer, threshold)} ({seconds:.1f} s in all); '
            'the mask GeoTIFF is on the file\'s grid, the presence GeoTIFF '
            'has one cell per stride'
        ]
        status = '\n\n'.join(html.escape(x, quote=False) for x in lines)
        return overview, None, files, status

    def close(self) -> None:
        """Drop the scene held (its embeddings and private copy)."""
        with self.lock:
            self.scene.close()


def build_demo(predictor: WebPredictor,
               examples: Sequence[Sequence[str]] = (),
               cache_ttl: float = CACHE_TTL,
               max_upload_size: str = MAX_UPLOAD_SIZE) -> gr.Blocks:
    """The Gradio page.

    Args:
        predictor (WebPredictor): The callbacks.
        examples (Sequence): ``[file, text, bands]`` rows.
        cache_ttl (float): Every ``cache_ttl`` seconds Gradio deletes the
            uploads and served copies older than that (``delete_cache``).
        max_upload_size (str): Named on the page; enforced by
            :func:`launch`.
    """
    with gr.Blocks(
            title='RSRefSeg referring segmentation',
            analytics_enabled=False,
            delete_cache=(cache_ttl, cache_ttl)) as demo:
        gr.Markdown(
            '## RSRefSeg: referring remote-sensing segmentation\n'
            'Upload an image (GeoTIFF, PNG or JPEG), type what to segment '
            '("the white storage tank left of the road") and press '
            '**Segment**. Multispectral files need the bands shown as red, '
            'green, blue (1-based, e.g. `3 2 1`); 16-bit and float data is '
            'stretched per band (2-98 %), nodata is never segmented.')
        with gr.Row():
            with gr.Column():
                file = gr.File(
                    label='Image (GeoTIFF, PNG or JPEG; up to '
                    f'{max_upload_size})',
                    file_types=FILE_TYPES,
                    type='filepath',
                    elem_id='image-file')
                preview = gr.Image(
                    label='Input as the model sees it',
                    type='numpy',
                    interactive=False,
                    format='png',
                    elem_id='preview')
                bands = gr.Textbox(
                    label='Bands shown as R G B (1-based; empty for RGB '
                    'images)',
                    placeholder='e.g. 3 2 1',
                    elem_id='bands')
                text = gr.Textbox(
                    label='Referring expression (up to '
                    f'{predictor.max_chars} characters)',
                    placeholder='e.g. the red circle',
                    max_length=predictor.max_chars,
                    elem_id='expression')
                button = gr.Button(
                    'Segment', variant='primary', elem_id='segment')
                scene_button = gr.Button(
                    'Segment whole scene (sliding windows)',
                    elem_id='segment-scene')
                gr.Markdown(
                    '*Whole scene*: the upload at its own resolution, '
                    'window by window (slower the first time; further '
                    'expressions on the same upload reuse its windows). '
                    'The page shows the scene with the mask; the mask '
                    'GeoTIFF, GeoJSON and presence GeoTIFF are downloads.')
            with gr.Column():
                overlay = gr.Image(
                    label='Prediction',
                    type='numpy',
                    interactive=False,
                    format='png',
                    elem_id='overlay')
                heatmap = gr.Image(
                    label='Activation heat map',
                    type='numpy',
                    interactive=False,
                    format='png',
                    elem_id='heatmap')
                download = gr.File(
                    label='Mask (GeoTIFF + GeoJSON when the '
                    'input is georeferenced)',
                    file_count='multiple',
                    interactive=False,
                    elem_id='download')
                status = gr.Markdown(elem_id='status')
        if examples:
            gr.Examples(
                examples=[list(e) for e in examples],
                inputs=[file, text, bands],
                label='Synthetic example scenes')
        gr.on([file.change, bands.submit],
              predictor.preview, [file, bands], [preview, status],
              api_visibility='private')
        gr.on([button.click, text.submit],
              predictor.segment, [file, text, bands],
              [overlay, heatmap, download, status],
              api_name='segment',
              concurrency_limit=1,
              concurrency_id='model',
              validator=predictor.validate)
        gr.on([scene_button.click],
              predictor.segment_scene, [file, text, bands],
              [overlay, heatmap, download, status],
              api_name='segment_scene',
              concurrency_limit=1,
              concurrency_id='model',
              validator=predictor.validate)
    return demo


def launch(demo: gr.Blocks,
           host: str,
           port: Optional[int],
           allowed_paths: Sequence[str] = (),
           block: bool = True,
           max_upload_size: str = MAX_UPLOAD_SIZE,
           max_queue: int = MAX_QUEUE):
    """Serve the page (no share link, no SSR, no MCP server).

    Every answer of Gradio's file routes goes through
    :class:`~rsrefseg_core.web.FileHeaders`: PNG / JPEG / GIF / WebP are
    shown, anything else (an uploaded HTML page or SVG included) is a
    download with ``nosniff`` and a sandboxing Content-Security-Policy.

    Args:
        allowed_paths (Sequence[str]): Folders Gradio may serve files from
            besides its cache (the examples and the outputs; not a folder
            holding the cache).
        max_upload_size (str): Larger uploads are refused by the server
            (HTTP 413, "File size exceeded maximum allowed size ...") and
            the page, e.g. ``'200mb'``.
        max_queue (int): Requests that may wait (Gradio's queue
            ``max_size``); one more is refused with "Queue is full". Each
            event runs one request at a time
            (``default_concurrency_limit=1``).

    Returns:
        tuple: Gradio's ``(app, local_url, share_url)``.
    """
    return demo.queue(
        max_size=max_queue, default_concurrency_limit=1).launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            ssr_mode=False,
            mcp_server=False,
            quiet=not block,
            allowed_paths=list(allowed_paths),
            prevent_thread_lock=not block,
            max_file_size=max_upload_size,
            app_kwargs=dict(middleware=[Middleware(FileHeaders)]))


def upload_size(text: str) -> str:
    """``'200mb'``, ``'2 GB'`` ... as Gradio's ``max_file_size`` reads it."""
    if not re.fullmatch(r'\s*\d+\s*[kmgt]?b\s*', text, re.IGNORECASE):
        raise argparse.ArgumentTypeError(
            f'expected a size such as 200mb or 2gb, got {text!r}')
    return text.replace(' ', '').lower()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--host',
        default='127.0.0.1',
        help='address to bind (0.0.0.0 exposes the demo to '
        'the network)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument(
        '--work-dir',
        default=None,
        help='folder for examples, outputs and (unless '
        'GRADIO_TEMP_DIR is set) Gradio\'s cache (default: '
        'a temporary folder, deleted at exit)')
    parser.add_argument(
        '--keep-results',
        type=int,
        default=KEEP_RESULTS,
        help='output folders kept, those of the last '
        f'requests (default {KEEP_RESULTS})')
    parser.add_argument(
        '--cache-ttl',
        type=float,
        default=CACHE_TTL,
        metavar='SECONDS',
        help='uploads and served files older than this are '
        'deleted, checked as often (default '
        f'{CACHE_TTL})')
    parser.add_argument(
        '--max-upload-size',
        default=MAX_UPLOAD_SIZE,
        type=upload_size,
        help='largest upload accepted, e.g. 200mb, 2gb '
        f'(default {MAX_UPLOAD_SIZE})')
    parser.add_argument(
        '--max-expression-chars',
        type=int,
        default=MAX_EXPRESSION_CHARS,
        metavar='N',
        help='longer expressions are refused with a message '
        f'(default {MAX_EXPRESSION_CHARS})')
    parser.add_argument(
        '--max-queue',
        type=int,
        default=MAX_QUEUE,
        metavar='N',
        help='requests that may wait for their turn; more are '
        f'refused (default {MAX_QUEUE})')
    parser.add_argument(
        '--max-memory',
        type=float,
        default=DEFAULT_MEMORY_LIMIT >> 20,
        metavar='MiB',
        help='window embeddings of the last whole scene kept in memory; '
        'beyond, in a temporary file (default '
        f'{DEFAULT_MEMORY_LIMIT >> 20})')
    parser.add_argument(
        '--max-scene-windows',
        type=int,
        default=MAX_SCENE_WINDOWS,
        metavar='N',
        help='whole scenes of more windows are refused with a message '
        f'(default {MAX_SCENE_WINDOWS})')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='unpickle the checkpoint without the safe '
        'loader\'s allow-list (torch.load weights_only='
        'False). Pickles can run code: only for files you '
        'trust')
    args = parser.parse_args(argv)
    if args.cache_ttl <= 0:
        parser.error('--cache-ttl must be > 0')
    if args.keep_results < 1:
        parser.error('--keep-results must be >= 1')
    if args.max_expression_chars < 1:
        parser.error('--max-expression-chars must be >= 1')
    if args.max_queue < 1:
        parser.error('--max-queue must be >= 1')
    if args.max_memory < 0:
        parser.error('--max-memory must be >= 0')
    if args.max_scene_windows < 1:
        parser.error('--max-scene-windows must be >= 1')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix='rsrefseg_web_')
    if not args.work_dir:
        atexit.register(shutil.rmtree, work, True)
    # uploads and served copies under the work dir, unless set
    gradio_cache = os.environ.setdefault('GRADIO_TEMP_DIR',
                                         osp.join(work, 'gradio'))
    os.makedirs(gradio_cache, exist_ok=True)
    with allow_unsafe_load(args.unsafe_load):
        model = init_referring_model(
            args.config, args.checkpoint, device=args.device)
    examples_dir = osp.join(work, 'examples')
    outputs = osp.join(work, 'outputs')
    examples = make_examples(examples_dir)
    predictor = WebPredictor(
        model,
        outputs,
        keep_results=args.keep_results,
        gradio_cache=gradio_cache,
        cache_ttl=args.cache_ttl,
        upload_dir=osp.join(work, 'uploads'),
        max_chars=args.max_expression_chars,
        scene_max_memory=int(args.max_memory * (1 << 20)),
        max_scene_windows=args.max_scene_windows)
    atexit.register(predictor.close)
    print(
        f'RSRefSeg web demo on http://{args.host}:{args.port} '
        f'(files under {work}, Gradio cache {gradio_cache})',
        flush=True)
    launch(
        build_demo(predictor, examples, args.cache_ttl, args.max_upload_size),
        args.host,
        args.port,
        allowed_paths=[examples_dir, outputs],
        max_upload_size=args.max_upload_size,
        max_queue=args.max_queue)


if __name__ == '__main__':
    main()
