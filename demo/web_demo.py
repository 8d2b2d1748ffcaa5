"""Web demo: upload an image, type an expression, see the mask.

    python demo/web_demo.py CONFIG CHECKPOINT [--device cpu] \
        [--host 127.0.0.1] [--port 7860]

then open http://127.0.0.1:7860. Upload a PNG / JPEG / GeoTIFF (any
rasterio-readable file; multispectral files need the bands shown as R G B,
e.g. ``3 2 1``), type a referring expression and press *Segment*: the page
shows the prediction over the image, the global text-filter activation and
offers the mask for download (a georeferenced GeoTIFF plus GeoJSON polygons
when the input was georeferenced, a PNG otherwise). A few synthetic scenes
(and one 16-bit 4-band GeoTIFF) are built in as examples; with the checkpoint
``make demo`` leaves (``work_dirs/demo/iter_1200.pth`` with the tiny config)
they are segmented as in the demo. A bad file or an empty expression gives a
message in the page, never a stack trace.

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
import html  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import List, Optional, Sequence, Tuple  # noqa: E402

import gradio as gr  # noqa: E402
import huggingface_hub.constants  # noqa: E402  (a gradio dependency)
import mmcv  # noqa: E402
import numpy as np  # noqa: E402

from rsrefseg_mm.apis import (ReferringPredictor,  # noqa: E402
                              init_referring_model, render_heatmap,
                              render_overlay, save_referring_outputs)
from rsrefseg_mm.datasets import SyntheticReferringDataset  # noqa: E402
from rsrefseg_mm.datasets.text import check_expression  # noqa: E402
from rsrefseg_mm.geo import RasterImage, read_image  # noqa: E402
from rsrefseg_mm.utils import allow_unsafe_load  # noqa: E402

# also when huggingface_hub was imported before the variables were set
# (gradio's analytics and gradio_client's telemetry go through it)
huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True

#: Accepted upload types.
FILE_TYPES = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.jp2', '.bmp',
              '.webp', '.img', '.vrt']
#: Synthetic example scenes (test split, attribute expressions, like
#: ``make demo``).
NUM_EXAMPLES = 3
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
        split='test', num_samples=NUM_EXAMPLES, img_size=128,
        num_objects=(3, 4), expression_types=('attribute', ))
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
            f.write(json.dumps(dict(image=image, text=text, bands=bands)) +
                    '\n')
    return examples


class WebPredictor:
    """The demo's callbacks, independent of the page layout.

    The embeddings of the last ``cache_size`` images (keyed by the upload's
    content and bands) are kept, so a new expression on an image already
    seen runs the text tower and the decoders only. Requests are answered
    one at a time (a lock around encode + decode), so concurrent users never
    read each other's embeddings.

    Args:
        model (nn.Module): From :func:`init_referring_model`.
        out_root (str): Folder for the per-request output files.
        cache_size (int): Encoded images kept. Defaults to 4.
    """

    def __init__(self, model, out_root: str, cache_size: int = 4) -> None:
        self.model = model
        self.out_root = out_root
        self.predictor = ReferringPredictor(model, cache_size=cache_size)
        self.lock = threading.Lock()
        os.makedirs(out_root, exist_ok=True)

    @staticmethod
    def _friendly(error: Exception, path: Optional[str]) -> str:
        """The error message with the upload's temp path shortened, escaped
        (the page renders messages as HTML: ``&nbsp;`` must show as typed).
        """
        msg = str(error)
        if path:
            msg = msg.replace(path, osp.basename(path))
        return html.escape(msg, quote=False)

    def _read(self, path: Optional[str], bands_text: str) -> RasterImage:
        if not path:
            raise ValueError('upload an image first (PNG, JPEG or GeoTIFF)')
        return read_image(path, parse_bands(bands_text),
                          name=osp.basename(path))

    def preview(self, path: Optional[str],
                bands_text: str) -> Tuple[Optional[np.ndarray], str]:
        """The uploaded image as the model will see it, and a summary.

        Problems (e.g. a multispectral file without bands yet) are returned
        as text, not raised: the user may still be filling in the form.
        """
        if not path:
            return None, ''
        try:
            image = self._read(path, bands_text)
        except USER_ERRORS as e:
            return None, f'**{self._friendly(e, path)}**'
        return image.img[..., ::-1], image.describe()

    def segment(self, path: Optional[str], text: str, bands_text: str
                ) -> Tuple[np.ndarray, np.ndarray, List[str], str]:
        """Segment the expression's object in the uploaded image.

        Returns:
            tuple: overlay (RGB), heat map (RGB), the mask files to
            download and a Markdown summary.

        Raises:
            gradio.Error: With a readable message for a bad file, bad bands
                or an empty expression.
        """
        try:
            text = check_expression(text, 'expression')
            if not path:
                raise ValueError(
                    'upload an image first (PNG, JPEG or GeoTIFF)')
            with self.lock:
                start = time.perf_counter()
                image = self.predictor.set_image(
                    path, parse_bands(bands_text), name=osp.basename(path))
                cached = self.predictor.from_cache
                encoded = time.perf_counter()
                result = self.predictor.predict(text)
                answered = time.perf_counter()
            out_dir = tempfile.mkdtemp(dir=self.out_root)
            stem = osp.splitext(osp.basename(path))[0]
            paths = save_referring_outputs(image, result, text, out_dir,
                                           stem)
        except USER_ERRORS as e:
            raise gr.Error(self._friendly(e, path), print_exception=False)
        except Exception as e:  # a bug: full report on the console only
            traceback.print_exc()
            raise gr.Error(f'internal error ({type(e).__name__}); see the '
                           'server log', print_exception=False)
        mask = result.pred_sem_seg.data[0].numpy()
        files = [paths[k] for k in ('geotiff', 'qgis_style', 'geojson',
                                    'mask') if k in paths]
        timing = 'image from cache' if cached else \
            f'image encoded in {encoded - start:.1f} s'
        status = (f'{image.describe()}\n\n**"{text}"**: {int(mask.sum())} '
                  f'pixels ({100 * mask.mean():.1f} %) predicted as the '
                  f'target ({timing} · answered in {answered - encoded:.1f} '
                  's)')
        if image.georeferenced:
            status += '; the GeoTIFF / GeoJSON open in QGIS at their place'
        return (render_overlay(image, result, text),
                render_heatmap(image, result, text), files, status)


def build_demo(predictor: WebPredictor,
               examples: Sequence[Sequence[str]] = ()) -> gr.Blocks:
    """The Gradio page."""
    with gr.Blocks(title='RSRefSeg referring segmentation',
                   analytics_enabled=False) as demo:
        gr.Markdown(
            '## RSRefSeg: referring remote-sensing segmentation\n'
            'Upload an image (PNG, JPEG or GeoTIFF), type what to segment '
            '("the white storage tank left of the road") and press '
            '**Segment**. Multispectral files need the bands shown as red, '
            'green, blue (1-based, e.g. `3 2 1`); 16-bit and float data is '
            'stretched per band (2-98 %), nodata is never segmented.')
        with gr.Row():
            with gr.Column():
                file = gr.File(label='Image (PNG, JPEG, GeoTIFF)',
                               file_types=FILE_TYPES, type='filepath',
                               elem_id='image-file')
                preview = gr.Image(label='Input as the model sees it',
                                   type='numpy', interactive=False,
                                   format='png', elem_id='preview')
                bands = gr.Textbox(
                    label='Bands shown as R G B (1-based; empty for RGB '
                    'images)', placeholder='e.g. 3 2 1', elem_id='bands')
                text = gr.Textbox(label='Referring expression',
                                  placeholder='e.g. the red circle',
                                  elem_id='expression')
                button = gr.Button('Segment', variant='primary',
                                   elem_id='segment')
            with gr.Column():
                overlay = gr.Image(label='Prediction', type='numpy',
                                   interactive=False, format='png',
                                   elem_id='overlay')
                heatmap = gr.Image(label='Activation heat map', type='numpy',
                                   interactive=False, format='png',
                                   elem_id='heatmap')
                download = gr.File(label='Mask (GeoTIFF + GeoJSON when the '
                                   'input is georeferenced)',
                                   file_count='multiple', interactive=False,
                                   elem_id='download')
                status = gr.Markdown(elem_id='status')
        if examples:
            gr.Examples(examples=[list(e) for e in examples],
                        inputs=[file, text, bands],
                        label='Synthetic example scenes')
        gr.on([file.change, bands.submit], predictor.preview,
              [file, bands], [preview, status], api_visibility='private')
        gr.on([button.click, text.submit], predictor.segment,
              [file, text, bands], [overlay, heatmap, download, status],
              api_name='segment', concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str, port: Optional[int],
           allowed_paths: Sequence[str] = (), block: bool = True):
    """Serve the page (no share link, no SSR, no MCP server).

    Returns:
        tuple: Gradio's ``(app, local_url, share_url)``.
    """
    return demo.queue().launch(
        server_name=host, server_port=port, share=False, inbrowser=False,
        ssr_mode=False, mcp_server=False, quiet=not block,
        allowed_paths=list(allowed_paths), prevent_thread_lock=not block)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to bind (0.0.0.0 exposes the demo to '
                        'the network)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--work-dir', default=None,
                        help='folder for examples and outputs (default: a '
                        'temporary folder)')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the checkpoint without the safe '
                        'loader\'s allow-list (torch.load weights_only='
                        'False). Pickles can run code: only for files you '
                        'trust')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix='rsrefseg_web_')
    with allow_unsafe_load(args.unsafe_load):
        model = init_referring_model(args.config, args.checkpoint,
                                     device=args.device)
    examples = make_examples(osp.join(work, 'examples'))
    predictor = WebPredictor(model, osp.join(work, 'outputs'))
    print(f'RSRefSeg web demo on http://{args.host}:{args.port} '
          f'(files under {work})', flush=True)
    launch(build_demo(predictor, examples), args.host, args.port,
           allowed_paths=[work])


if __name__ == '__main__':
    main()
