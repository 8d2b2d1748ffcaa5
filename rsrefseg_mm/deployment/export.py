"""Export a trained RSRefSeg to three ONNX graphs plus ``deploy.json``.

``image_encoder.onnx``: ``image`` (1, 3, H, W) float32 RGB 0-255 at the
model's input size -> ``img_feats``, ``image_embeddings`` (and, for a SAM
2.1 head, ``high_res_feats_s0`` / ``high_res_feats_s1``).
``text_encoder.onnx``: ``token_ids`` (N, L) int64 (and ``token_mask``
(N, L) bool for SigLIP) -> ``text_global`` (N, D), ``text_feats``
(N, L, D), ``text_mask`` (N, L) bool.
``decoder.onnx``: ``img_feats``, ``image_embeddings``, the text
encoder's outputs (and a SAM 2.1 head's two maps) -> ``logits`` (N, 1, Hm,
Wm), ``global_map`` (N, h, w) and, for a head with ``presence_cfg``,
``presence`` (N,) probabilities, the logits of an expression below
``presence_threshold`` (in ``deploy.json``; null without presence) gated
in the graph as in PyTorch inference (see
:mod:`~rsrefseg_mm.deployment.onnx_graphs`).
``deploy.json`` holds what a runtime needs beside the graphs: their files,
inputs and outputs (``graphs``), the sha256 of every file (``files``,
checked by :func:`rsrefseg_core.deploy_info.read_deploy_info`); the
tokenizer file is copied next to them. A graph over protobuf's 2 GiB keeps
its tensors in ``<name>.onnx.data``.
"""
import copy
import json
import os
import os.path as osp
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from rsrefseg_core.deploy_info import (DEPLOY_FORMAT, GRAPHS, file_sha256,
                                       graph_file_names, model_files)
from rsrefseg_core.tokenizers import GemmaSentencePiece
from ..models.backbones import SigLIPBackbone
from ..models.peft import merge_lora
from ..models.sam import SAMFastAttention, SAMFastBlock
from .onnx_attention import OnnxSAMAttention
from .onnx_files import graph_file
from .onnx_graphs import DecoderGraph, ImageEncoderGraph, TextEncoderGraph
from .onnx_symbolics import CONTRIB_DOMAIN, CONTRIB_VERSION, onnx_symbolics

#: Expressions traced into the text encoder and decoder (any N runs with
#: dynamic axes).
EXAMPLE_TEXTS = ('the white storage tank left of the road', 'a ship')
#: ``Gelu`` with ``approximate='tanh'`` (SigLIP's MLP) is one operator from
#: opset 20 on, nine element-wise ones before.
DEFAULT_OPSET = 20


def model_input_size(cfg) -> Tuple[int, int]:
    """(H, W) the test pipeline resizes images to (``Resize`` with
    ``keep_ratio=False``).

    Raises:
        ValueError: The test pipeline has no such ``Resize``.
    """
    pipeline = cfg.test_dataloader.dataset.get('pipeline', [])
    for t in pipeline:
        if t.get('type') == 'Resize' and not t.get('keep_ratio', False):
            scale = t['scale']
            w, h = (scale, scale) if isinstance(scale, int) else scale
            return int(h), int(w)
    raise ValueError('export needs a test pipeline that resizes to a fixed '
                     "size (dict(type='Resize', scale=..., keep_ratio=False))"
                     f'; got {[t.get("type") for t in pipeline]}')


def scene_window_size(model: nn.Module, input_size: Tuple[int, int]) -> list:
    """The default window of scene inference: the config's
    ``scene_window_size`` (the dataset's image size), else the model's
    input size."""
    cfg = getattr(model, 'cfg', None)
    size = None if cfg is None else cfg.get('scene_window_size')
    if size is None:
        return list(input_size)
    return [int(size), int(size)] if isinstance(size, int) else \
        [int(v) for v in size]


def graph_io(path: str) -> Dict[str, List[str]]:
    """The input and output names of an exported graph, as written (the
    exporter drops an input the graph does not use)."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    return dict(
        inputs=[i.name for i in graph.input],
        outputs=[o.name for o in graph.output])


def _text_filter_info(model) -> Optional[dict]:
    """The global text filter's ``scale`` and ``bias`` (``sigmoid(scale *
    cos(img_feats, text_global) + bias)``; the scene runtime's filter gate),
    None for a prompter without one."""
    if not hasattr(model.neck, 'filter_scale_bias'):
        return None
    scale, bias = model.neck.filter_scale_bias(model.backbone.logit_outputs())
    return dict(scale=scale, bias=bias)


def _tokenizer_info(backbone: nn.Module, out_dir: str) -> dict:
    tok = backbone.tokenizer
    if isinstance(tok, GemmaSentencePiece):  # SigLIP 2
        src, kind = tok.model_file, 'gemma-sentencepiece'
        extra = dict(
            lowercase=tok.lowercase,
            eos_token=tok.eos_token,
            pad_token=tok.pad_token,
            bos_token=tok.bos_token,
            unk_token=tok.unk_token)
    elif isinstance(backbone, SigLIPBackbone):
        src, kind = tok.model_file, 'siglip-sentencepiece'
        extra = dict(
            eos_token=tok.eos_token,
            unk_token=tok.unk_token,
            pad_token=tok.sp.id_to_piece(tok.pad_id))
    else:
        src, kind, extra = tok.bpe_path, 'clip-bpe', {}
    name = osp.basename(src)
    shutil.copyfile(src, osp.join(out_dir, name))
    return dict(
        kind=kind, file=name, context_length=tok.context_length, **extra)


@torch.no_grad()
def export_onnx(model: nn.Module,
                cfg,
                out_dir: str,
                config_path: Optional[str] = None,
                checkpoint_path: Optional[str] = None,
                opset: int = DEFAULT_OPSET,
                dynamic_expressions: bool = True,
                texts: Sequence[str] = EXAMPLE_TEXTS,
                contrib_ops: bool = True) -> dict:
    """Write ``image_encoder.onnx``, ``text_encoder.onnx``,
    ``decoder.onnx``, ``deploy.json`` and the tokenizer file into
    ``out_dir``.

    LoRA layers are merged into plain layers first (on a copy).

    Args:
        model (nn.Module): A trained ``RSRefSeg``.
        cfg (Config): Its config (test pipeline, threshold).
        out_dir (str): Output folder (created).
        config_path (str, optional): For the hash in ``deploy.json``.
        checkpoint_path (str, optional): For the hash in ``deploy.json``.
        opset (int): ONNX opset, at least 18 for CLIP's anti-aliased resize
            (``Resize(antialias=1)``). Defaults to :data:`DEFAULT_OPSET`.
        dynamic_expressions (bool): Any number of expressions per text
            encoder and decoder call (dynamic first axis); else exactly
            ``len(texts)``.
        texts (Sequence[str]): Expressions traced into the text encoder and
            decoder.
        contrib_ops (bool): SAM's attention as ONNX Runtime's fused
            ``com.microsoft.MultiHeadAttention``
            (:class:`~rsrefseg_mm.deployment.onnx_attention.OnnxSAMAttention`).
            False writes standard ONNX operators only, for other runtimes
            (slower under ONNX Runtime: the attention matrices are
            materialised). Defaults to True.

    Returns:
        dict: The contents of ``deploy.json`` (plus export times and sizes).
    """
    os.makedirs(out_dir, exist_ok=True)
    model = copy.deepcopy(model).cpu().eval()
    merged = merge_lora(model)
    for module in model.modules():
        if isinstance(module, SAMFastAttention):
            module.__class__ = OnnxSAMAttention
            module.contrib_ops = contrib_ops
        if isinstance(module, SAMFastBlock):
            # segment-anything's pad-and-partition windows: traceable ops
            module.fused_window_min_tokens = sys.maxsize
    h, w = model_input_size(cfg)
    encoder, text_encoder = ImageEncoderGraph(model), TextEncoderGraph(model)
    decoder = DecoderGraph(model)
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    image = image * 255
    image_outputs = encoder(image)
    img_feats = image_outputs[0]
    tokens = model.backbone.tokenizer(list(texts))
    tokens = tokens if isinstance(tokens, tuple) else (tokens, )
    text_args = tokens[:len(text_encoder.input_names)]
    # the decoder's inputs: img_feats, image_embeddings, the text
    # encoder's outputs, then a SAM 2.1 head's high-resolution maps
    dec_args = image_outputs[:2] + text_encoder(*text_args) + \
        image_outputs[2:]
    logits, global_map = decoder(*dec_args)[:2]

    def n_axis(names: Sequence[str]) -> Optional[dict]:
        if not dynamic_expressions:
            return None
        return {
            name: {
                0: 'num_expressions'
            }
            for name in names if name not in encoder.output_names
        }

    times = {}
    graphs = [
        # name, module, args, input names, output names, dynamic axes
        ('image_encoder', encoder, (image, ), ['image'],
         list(encoder.output_names), None),
        ('text_encoder', text_encoder, text_args,
         list(text_encoder.input_names), list(text_encoder.output_names),
         n_axis(text_encoder.input_names + text_encoder.output_names)),
        ('decoder', decoder, dec_args, list(decoder.input_names),
         list(decoder.output_names),
         n_axis(decoder.input_names + decoder.output_names)),
    ]
    assert tuple(g[0] for g in graphs) == GRAPHS
    for name, graph, args, inputs, outputs, axes in graphs:
        start = time.perf_counter()
        with onnx_symbolics(opset), graph_file(
                osp.join(out_dir, f'{name}.onnx')) as scratch:
            torch.onnx.export(
                graph,
                args,
                scratch,
                dynamo=False,
                opset_version=opset,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                custom_opsets={CONTRIB_DOMAIN: CONTRIB_VERSION}
                if contrib_ops else None)
        times[name] = time.perf_counter() - start
    info = dict(
        format=DEPLOY_FORMAT,
        **{name: f'{name}.onnx'
           for name in GRAPHS},
        # inputs and outputs as written (an unused input is not there)
        graphs={
            name: graph_io(osp.join(out_dir, f'{name}.onnx'))
            for name in GRAPHS
        },
        input_size=[h, w],
        window_size=scene_window_size(model, (h, w)),
        input='RGB 0-255 float32 (1, 3, H, W), resized bilinearly '
        '(OpenCV INTER_LINEAR, aspect ratio not kept); the graph normalises',
        img_feats_shape=list(img_feats.shape),
        image_embeddings_shape=list(image_outputs[1].shape),
        low_res_size=list(logits.shape[-2:]),
        filter_grid=list(global_map.shape[-2:]),
        threshold=float(model.decode_head.threshold),
        text_filter=_text_filter_info(model),
        presence_threshold=float(model.decode_head.presence_cfg['threshold'])
        if decoder.presence else None,
        scene_presence_threshold=float(
            model.decode_head.presence_cfg['scene_threshold'])
        if decoder.presence else None,
        tokenizer=_tokenizer_info(model.backbone, out_dir),
        dynamic_expressions=bool(dynamic_expressions),
        num_expressions=len(texts),
        opset=opset,
        contrib_ops=CONTRIB_DOMAIN if contrib_ops else None,
        lora_layers_merged=merged,
        config=osp.basename(config_path) if config_path else None,
        config_sha256=file_sha256(config_path) if config_path else None,
        checkpoint_sha256=file_sha256(checkpoint_path)
        if checkpoint_path else None,
        torch=torch.__version__)
    # every file a runtime reads, checked against these on load
    info['files'] = model_files(
        out_dir,
        graph_file_names(info) + [info['tokenizer']['file']])
    with open(osp.join(out_dir, 'deploy.json'), 'w') as f:
        json.dump(info, f, indent=1)
    sizes = {
        name: sum(
            osp.getsize(osp.join(out_dir, p)) for p in os.listdir(out_dir)
            if p.startswith(name))
        for name in GRAPHS
    }
    return dict(info, export_seconds=times, bytes=sizes)
