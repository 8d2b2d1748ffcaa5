"""int8 graphs of an exported folder, with ONNX Runtime's quantization tools.

Dynamic quantization (``onnxruntime.quantization.quantize_dynamic``):
weights of ``MatMul`` / ``Gemm`` / ``Conv`` stored as int8 (per output
channel), activations quantized at run time per tensor (uint8) and the
products computed with integer kernels (``MatMulInteger`` /
``ConvInteger``, VNNI / AMX on CPUs that have them). Operators without an
integer kernel stay float32 and are listed in ``deploy.json``: ONNX
Runtime's fused ``com.microsoft.MultiHeadAttention`` (SAM's attention: its
softmax(QK^T)V is one float kernel), normalisation, softmax, GELU,
resizing. The quantized graph replaces the float one in the folder
(``<graph>.int8.onnx``) and ``deploy.json`` records what was done, so the
runtime needs nothing new.
"""
import collections
import json
import os
import os.path as osp
from typing import Dict, Sequence

from rsrefseg_core.deploy_info import GRAPHS, graph_file_names, model_files

#: Graphs of an exported folder that can be quantized (all three:
#: ``image_encoder``, ``text_encoder``, ``decoder``).
QUANTIZABLE_GRAPHS = GRAPHS
#: Operators given integer kernels.
INT8_OP_TYPES = ('MatMul', 'Gemm', 'Conv')


def op_counts(path: str) -> Dict[str, int]:
    """``{op_type: count}`` of a graph's nodes (subgraphs excluded)."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def quantize_folder(out_dir: str,
                    graphs: Sequence[str] = ('image_encoder', )
                    ) -> dict:  # yapf: disable
    """Quantize graphs of a folder written by ``export_onnx`` in place.

    Args:
        out_dir (str): The exported folder (``deploy.json``).
        graphs (Sequence[str]): Which of :data:`QUANTIZABLE_GRAPHS` to
            quantize.

    Returns:
        dict: The updated ``deploy.json`` content.

    Raises:
        ValueError: An unknown graph name, or a folder already quantized.
    """
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    bad = [g for g in graphs if g not in QUANTIZABLE_GRAPHS]
    if bad or not graphs:
        raise ValueError('graphs to quantize must be among '
                         f'{QUANTIZABLE_GRAPHS}, got {list(graphs)}')
    deploy = osp.join(out_dir, 'deploy.json')
    with open(deploy) as f:
        info = json.load(f)
    if info.get('quantization'):
        raise ValueError(f'{deploy}: the graphs are already quantized '
                         f'({info["quantization"]["type"]}); export again')
    report = {}
    for graph in graphs:
        name = info[graph]
        src = osp.join(out_dir, name)
        dst = osp.join(out_dir, osp.splitext(name)[0] + '.int8.onnx')
        external = osp.isfile(src + '.data')
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(INT8_OP_TYPES),
            use_external_data_format=external)
        before, after = op_counts(src), op_counts(dst)
        report[graph] = dict(
            fp32_file=name,
            int8_ops={
                k: v
                for k, v in after.items()
                if k in ('MatMulInteger', 'ConvInteger',
                         'DynamicQuantizeLinear', 'MatMulIntegerToFloat',
                         'DynamicQuantizeMatMul')
            },
            float_ops={
                k: v
                for k, v in after.items()
                if k in INT8_OP_TYPES or k in ('MultiHeadAttention',
                                               'Attention')
            },
            quantized_of={
                k: before.get(k, 0) - after.get(k, 0)
                for k in INT8_OP_TYPES
            })
        for old in (src, src + '.data'):
            if osp.isfile(old):
                os.remove(old)
        info[graph] = osp.basename(dst)
    info['quantization'] = dict(
        type='int8-dynamic',
        weights='int8 per channel',
        activations='uint8 per tensor, at run time',
        op_types=list(INT8_OP_TYPES),
        graphs=report,
        onnxruntime=onnxruntime.__version__)
    info['files'] = model_files(
        out_dir,
        graph_file_names(info) + [info['tokenizer']['file']])
    with open(deploy, 'w') as f:
        json.dump(info, f, indent=1)
    return info
