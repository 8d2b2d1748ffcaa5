"""``deploy.json``: what an exported model folder holds, checked on load.

``tools/deployment/export_onnx.py`` writes the folder: three graphs
(:data:`GRAPHS`: ``image_encoder.onnx``, ``text_encoder.onnx``,
``decoder.onnx``, each with a ``.onnx.data`` when its tensors exceed
2 GiB), the tokenizer file and ``deploy.json``, which records each graph's
file, inputs and outputs (``graphs``) and the sha256 of every one of those
files (``files``). A runtime reads the folder through
:func:`read_deploy_info`, which refuses:

* a ``deploy.json`` that is not this format or not a JSON object, and a
  folder exported in the earlier two-graph layout (``rsrefseg-onnx/1``:
  the text tower inside the decoder), with the command to export it again;
* file names that are not plain names inside the folder (absolute paths,
  ``..``, sub-folders, links leading out of it): a model folder never
  points at other files of the machine;
* a file whose content differs from its recorded sha256 (changed, cut or
  swapped after export), or a graph or tokenizer without a hash;
* settings that would answer silently wrong: a threshold (or a
  ``presence_threshold``, ``scene_presence_threshold``) that is not a
  finite number in (0, 1), a scene presence threshold below the presence
  threshold, input sizes that are not positive integers.

``presence_threshold`` is that of a model with a presence output
(``decode_head.presence_cfg``): its decoder graph also returns
``presence`` (N,), the probability that each expression's referent is in
the image, and already gives an expression below the threshold empty-mask
logits. It is null (or absent, in folders exported before it existed) for
a model without one. ``scene_presence_threshold``
(``presence_cfg.scene_threshold``; absent: the presence threshold) is the
threshold of the windows of a whole scene. ``text_filter`` (``scale``,
``bias``; null for a prompter without a global text filter, absent in
older folders) is the filter ``sigmoid(scale * cos(img_feats,
text_global) + bias)`` a scene's windows are gated with.
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Dict, Iterable

DEPLOY_FORMAT = 'rsrefseg-onnx/2'
#: The two-graph layout (text tower in the decoder graph), refused.
OLD_DEPLOY_FORMATS = ('rsrefseg-onnx/1', )
#: The graphs of a folder, in the order a runtime runs them: the image
#: encoder once per image, the text encoder once per expression, the
#: decoder once per image and batch of expressions.
GRAPHS = ('image_encoder', 'text_encoder', 'decoder')
DEPLOY_FILE = 'deploy.json'
#: A ``deploy.json`` is a few KB; larger is not one.
MAX_DEPLOY_JSON_BYTES = 1 << 20
TOKENIZER_KINDS = ('clip-bpe', 'siglip-sentencepiece', 'gemma-sentencepiece')
#: Fields of ``tokenizer`` each kind needs besides kind, file and
#: context_length.
TOKENIZER_FIELDS = {
    'clip-bpe': (),
    'siglip-sentencepiece': ('eos_token', 'pad_token', 'unk_token'),
    'gemma-sentencepiece':
    ('lowercase', 'eos_token', 'pad_token', 'bos_token', 'unk_token'),
}


class DeployInfoError(ValueError):
    """A model folder whose ``deploy.json`` or files cannot be trusted."""


def file_sha256(path: str) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def model_files(model_dir: str, names: Iterable[str]) -> Dict[str, str]:
    """``{name: sha256}`` of the named files and of the ``.data`` file of
    each graph that has one (what :func:`read_deploy_info` verifies).

    Args:
        model_dir (str): The exported folder.
        names (Iterable[str]): Plain file names in it.

    Returns:
        dict: File name -> sha256.
    """
    files = {}
    for name in names:
        for candidate in (name, name + '.data'):
            path = osp.join(model_dir, candidate)
            if candidate == name or osp.isfile(path):
                files[candidate] = file_sha256(path)
    return files


def graph_file_names(info: dict) -> list:
    """The ``.onnx`` file of each of :data:`GRAPHS` in a ``deploy.json``'s
    content (their ``.data`` files not included)."""
    return [info[name] for name in GRAPHS]


def _names(value, what: str, where: str) -> list:
    if not isinstance(value, list) or not value or not all(
            isinstance(n, str) and n for n in value):
        raise DeployInfoError(f'{where}: {what} must be a list of names, '
                              f'got {value!r:.80}')
    return value


def _inside(model_dir: str, name, what: str, where: str) -> str:
    """The path of ``name`` in ``model_dir``; refuses anything else."""
    if not isinstance(name, str) or not name or name in ('.', '..') or \
            osp.basename(name) != name or '\\' in name or osp.isabs(name):
        raise DeployInfoError(
            f'{where}: {what} must be a plain file name inside the model '
            f'folder, got {name!r}')
    path = osp.join(model_dir, name)
    real, folder = osp.realpath(path), osp.realpath(model_dir)
    if osp.dirname(real) != folder:
        raise DeployInfoError(f'{where}: {what} {name!r} leads out of the '
                              f'model folder (to {real})')
    if not osp.isfile(path):
        raise DeployInfoError(f'{where}: {what} {name!r} is missing from '
                              f'{model_dir}')
    return path


def _positive_ints(value, count: int, what: str, where: str) -> list:
    if not isinstance(value, list) or len(value) != count or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16
            for v in value):
        raise DeployInfoError(f'{where}: {what} must be {count} positive '
                              f'integers, got {value!r}')
    return value


def check_threshold(value, where: str, what: str = 'threshold') -> float:
    """A threshold on a probability: a finite number strictly between 0
    and 1.

    Args:
        value: The value read.
        where (str): The file it was read from.
        what (str): Its key, for the error. Defaults to ``'threshold'``.

    Raises:
        DeployInfoError: Naming ``where``, ``what`` and the value
            (``"nan"`` would give empty masks, 0 or 1 all or nothing).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0 < value < 1:
        raise DeployInfoError(f'{where}: {what} must be a finite number '
                              f'in (0, 1), got {value!r}')
    return float(value)


def read_deploy_info(model_dir: str, verify_hashes: bool = True) -> dict:
    """Read and check ``<model_dir>/deploy.json`` (see the module doc).

    Args:
        model_dir (str): The exported folder.
        verify_hashes (bool): Check every file against its sha256
            (reads the graphs once). Defaults to True.

    Returns:
        dict: The info, with ``paths`` added: the absolute path of each of
        :data:`GRAPHS` and of ``tokenizer``,
        ``presence_threshold`` and ``scene_presence_threshold`` set (None
        for a model without presence; the scene's defaults to the other) and
        ``files_sha256``, a digest of the recorded file hashes (what the
        folder's weights are, for files that cache its outputs).

    Raises:
        FileNotFoundError: No ``deploy.json`` (says how to export).
        DeployInfoError: For anything listed in the module doc.
    """
    where = osp.join(model_dir, DEPLOY_FILE)
    if not osp.isfile(where):
        raise FileNotFoundError(
            f'{where} not found: export a model first with '
            'tools/deployment/export_onnx.py CONFIG CHECKPOINT --out-dir '
            f'{model_dir}')
    if os.path.getsize(where) > MAX_DEPLOY_JSON_BYTES:
        raise DeployInfoError(f'{where}: larger than '
                              f'{MAX_DEPLOY_JSON_BYTES} bytes; not a '
                              'deploy.json')
    try:
        with open(where, encoding='utf-8') as f:
            info = json.load(f)
    except (ValueError, RecursionError) as e:
        raise DeployInfoError(f'{where}: not valid JSON ({e})') from None
    if isinstance(info, dict) and info.get('format') in OLD_DEPLOY_FORMATS:
        raise DeployInfoError(
            f'{where}: format {info["format"]!r}, the two-graph layout '
            '(image_encoder.onnx + decoder.onnx with the text tower inside); '
            f'this runtime reads {DEPLOY_FORMAT!r} (a text_encoder.onnx run '
            'once per expression): export the model again with '
            'tools/deployment/export_onnx.py CONFIG CHECKPOINT --out-dir '
            f'{model_dir}')
    if not isinstance(info, dict) or info.get('format') != DEPLOY_FORMAT:
        found = info.get('format') if isinstance(info, dict) else info
        raise DeployInfoError(f'{where}: format {found!r:.60}, expected '
                              f'{DEPLOY_FORMAT!r}')
    tokenizer = info.get('tokenizer')
    if not isinstance(tokenizer, dict) or \
            tokenizer.get('kind') not in TOKENIZER_KINDS:
        raise DeployInfoError(f'{where}: tokenizer.kind must be one of '
                              f'{TOKENIZER_KINDS}, got {tokenizer!r:.80}')
    missing = [
        k for k in TOKENIZER_FIELDS[tokenizer['kind']] if k not in tokenizer
    ]
    if missing:
        raise DeployInfoError(f'{where}: tokenizer of kind '
                              f'{tokenizer["kind"]!r} lacks {missing}')
    paths = {
        name: _inside(model_dir, info.get(name), name, where)
        for name in GRAPHS
    }
    paths['tokenizer'] = _inside(model_dir, tokenizer.get('file'),
                                 'tokenizer.file', where)
    _positive_ints(info.get('input_size'), 2, 'input_size', where)
    if info.get('window_size') is not None:
        _positive_ints(info['window_size'], 2, 'window_size', where)
    _positive_ints([tokenizer.get('context_length')], 1,
                   'tokenizer.context_length', where)
    _positive_ints([info.get('num_expressions')], 1, 'num_expressions', where)
    check_threshold(info.get('threshold'), where)
    presence = info.get('presence_threshold')
    scene_presence = info.get('scene_presence_threshold', presence)
    if presence is not None:
        check_threshold(presence, where, 'presence_threshold')
        check_threshold(scene_presence, where, 'scene_presence_threshold')
        if scene_presence < presence:
            raise DeployInfoError(
                f'{where}: scene_presence_threshold ({scene_presence}) is '
                f'below presence_threshold ({presence})')
    elif scene_presence is not None:
        raise DeployInfoError(f'{where}: scene_presence_threshold without '
                              'presence_threshold')
    text_filter = info.get('text_filter')
    if text_filter is not None:
        if not isinstance(text_filter, dict) or not all(
                isinstance(text_filter.get(k), (
                    int, float)) and not isinstance(text_filter.get(k), bool)
                and math.isfinite(text_filter[k]) for k in ('scale', 'bias')):
            raise DeployInfoError(f'{where}: text_filter must give a finite '
                                  f'scale and bias, got {text_filter!r:.80}')
    if not isinstance(info.get('dynamic_expressions'), bool):
        raise DeployInfoError(f'{where}: dynamic_expressions must be true or '
                              'false')
    graphs = info.get('graphs')
    if not isinstance(graphs, dict):
        raise DeployInfoError(f'{where}: graphs must map {GRAPHS} to their '
                              'inputs and outputs')
    for name in GRAPHS:
        io = graphs.get(name)
        if not isinstance(io, dict):
            raise DeployInfoError(f'{where}: graphs.{name} must give its '
                                  f'inputs and outputs, got {io!r:.80}')
        for key in ('inputs', 'outputs'):
            _names(io.get(key), f'graphs.{name}.{key}', where)
    files = info.get('files')
    if not isinstance(files, dict):
        raise DeployInfoError(
            f'{where}: no file hashes (files); export the model again with '
            'tools/deployment/export_onnx.py')
    for name in graph_file_names(info) + [tokenizer['file']]:
        if name not in files:
            raise DeployInfoError(f'{where}: no sha256 recorded for {name}')
    for name in graph_file_names(info):
        if osp.exists(osp.join(model_dir, name + '.data')) and \
                name + '.data' not in files:
            raise DeployInfoError(
                f'{where}: no sha256 recorded for {name}.data')
    if verify_hashes:
        for name, expected in files.items():
            path = _inside(model_dir, name, 'files entry', where)
            if file_sha256(path) != expected:
                raise DeployInfoError(
                    f'{path}: content differs from the sha256 recorded in '
                    f'{where} at export (changed, truncated or replaced); '
                    'export the model again')
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode())
    return dict(
        info,
        paths=paths,
        presence_threshold=presence,
        scene_presence_threshold=scene_presence,
        files_sha256=digest.hexdigest())
