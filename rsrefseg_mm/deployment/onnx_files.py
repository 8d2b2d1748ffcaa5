"""Files of an exported graph: ``<name>.onnx``, plus ``<name>.onnx.data``
when its tensors exceed protobuf's 2 GiB.

PyTorch's TorchScript exporter saves a graph over 2 GiB (e.g. the image
encoder of the ``-l`` configs: CLIP ViT-L/14 + SAM ViT-L, 2.45 GB) with one
file per tensor, named after the tensor, next to the ``.onnx``: hundreds of
loose files, and two graphs exported into one folder could overwrite each
other's. :func:`graph_file` exports into a scratch folder and keeps one
``.onnx`` (and one ``.onnx.data``, read by ONNX Runtime from the graph's
folder).
"""
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Iterator


def single_data_file(src: str, dst: str) -> None:
    """Rewrite a graph whose tensors are external files with all of them
    in ``<dst>.data``.

    Args:
        src (str): The graph (its external tensors beside it).
        dst (str): Where to write the graph.
    """
    import onnx
    model = onnx.load(src)  # reads the external tensors
    onnx.save_model(
        model,
        dst,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=osp.basename(dst) + '.data',
        size_threshold=1024)
    if osp.exists(dst + '.data'):  # the graph's permissions (onnx: 0600)
        os.chmod(dst + '.data', os.stat(dst).st_mode & 0o777)


@contextmanager
def graph_file(path: str) -> Iterator[str]:
    """A scratch path to export a graph to; the result is moved to
    ``path`` (a ``.onnx``, plus ``<path>.data`` when the exporter wrote
    external tensors). A ``<path>.data`` of an earlier export is removed.

    Args:
        path (str): The graph's final path.

    Yields:
        str: The path to export to.
    """
    data = path + '.data'
    if osp.exists(data):
        os.remove(data)
    folder = osp.dirname(osp.abspath(path))
    with tempfile.TemporaryDirectory(dir=folder, prefix='.export-') as tmp:
        scratch = osp.join(tmp, osp.basename(path))
        yield scratch
        if os.listdir(tmp) == [osp.basename(scratch)]:
            os.replace(scratch, path)
        else:
            single_data_file(scratch, path)
