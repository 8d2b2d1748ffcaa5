"""Export a trained RSRefSeg to ONNX for ONNX Runtime.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out-dir DIR \
        [--opset 20] [--dynamic-expressions] [--no-contrib-ops] \
        [--quantize int8 [--quantize-graphs image_encoder text_encoder
        decoder]]

writes ``image_encoder.onnx``, ``text_encoder.onnx`` (the text tower, run
once per expression), ``decoder.onnx``, ``deploy.json`` and the tokenizer
file (``spiece.model`` or CLIP's BPE vocabulary) into DIR, then checks the
three graphs with ``onnx.checker`` (needs the ``export`` extra:
``pip install -e ".[export]"``). SAM's attention is ONNX Runtime's fused
``com.microsoft.MultiHeadAttention`` unless ``--no-contrib-ops`` (standard
operators only, for other runtimes). A model with a presence output
(``decode_head.presence_cfg``) gets a ``presence`` output in its decoder
graph, which gates the mask logits as PyTorch inference does, and
``presence_threshold`` in ``deploy.json``. ``--quantize int8`` replaces
the image encoder (or the graphs named by ``--quantize-graphs``) by its
int8 form (:mod:`rsrefseg_mm.deployment.quantize`). Run the result
with ``python -m rsrefseg_deploy IMAGE "EXPRESSION" --model-dir DIR
--out-dir OUT``, which needs ONNX Runtime but no torch nor OpenMMLab:
``pip install -r requirements/deploy.txt && pip install --no-deps .``.
"""
import argparse
import json
import os.path as osp

from mmengine.config import DictAction

from rsrefseg_mm.apis import init_referring_model
from rsrefseg_mm.deployment import DEFAULT_OPSET, export_onnx
from rsrefseg_mm.deployment.quantize import QUANTIZABLE_GRAPHS, quantize_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument(
        '--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset')
    parser.add_argument(
        '--no-contrib-ops',
        action='store_true',
        help='standard ONNX operators only (no com.microsoft '
        'MultiHeadAttention; slower under ONNX Runtime)')
    parser.add_argument(
        '--dynamic-expressions',
        action='store_true',
        help='any number of expressions per text encoder and decoder call '
        '(default: they take exactly --num-expressions)')
    parser.add_argument(
        '--num-expressions',
        type=int,
        default=1,
        metavar='N',
        help='expressions per text encoder and decoder call without '
        '--dynamic-expressions')
    parser.add_argument(
        '--quantize',
        choices=['int8'],
        help='int8 graphs (ONNX Runtime dynamic quantization: int8 weights, '
        'activations quantized at run time; deploy.json records it)')
    parser.add_argument(
        '--quantize-graphs',
        nargs='+',
        choices=list(QUANTIZABLE_GRAPHS),
        default=['image_encoder'],
        help='graphs --quantize applies to (default: the image encoder, '
        'where nearly all of the FLOPs are)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    try:
        import onnx
    except ImportError as e:
        raise ImportError(
            f'{osp.basename(__file__)} needs onnx and onnxruntime: pip '
            'install -e ".[export]" (or `make install`)') from e
    args = parse_args(argv)
    model = init_referring_model(
        args.config, args.checkpoint, cfg_options=args.cfg_options)
    # a dynamic axis is traced with 2 expressions (a size-1 axis can be
    # folded into constants by the tracer)
    count = 2 if args.dynamic_expressions else args.num_expressions
    texts = [f'the white storage tank number {i}' for i in range(count)]
    info = export_onnx(model, model.cfg, args.out_dir, args.config,
                       args.checkpoint, args.opset, args.dynamic_expressions,
                       texts, not args.no_contrib_ops)
    if args.quantize == 'int8':
        info.update(quantize_folder(args.out_dir, args.quantize_graphs))
        info['bytes'] = {
            name: sum(
                osp.getsize(p) for p in (path, path + '.data')
                if osp.isfile(p))
            for name, path in ((n, osp.join(args.out_dir, info[n]))
                               for n in QUANTIZABLE_GRAPHS)
        }
    for name in QUANTIZABLE_GRAPHS:
        onnx.checker.check_model(osp.join(args.out_dir, info[name]))
    print(
        json.dumps(
            dict(
                out_dir=args.out_dir,
                seconds=info['export_seconds'],
                bytes=info['bytes'],
                lora_layers_merged=info['lora_layers_merged'],
                presence_threshold=info['presence_threshold'],
                quantization=info.get('quantization')),
            indent=1))
    return info


if __name__ == '__main__':
    main()
