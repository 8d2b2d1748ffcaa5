"""A graph whose tensors the exporter wrote as loose files (graphs over
2 GiB) ends as one .onnx and one .onnx.data that ONNX Runtime runs."""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rsrefseg_mm.deployment.onnx_files import graph_file
from helpers import assert_close_to_reference, matmul_atol


def matmul_model(weights):
    """y = x @ w0 @ w1 ... with the weights as initializers."""
    nodes, inits, prev = [], [], 'x'
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f'w{i}'))
        nodes.append(helper.make_node('MatMul', [prev, f'w{i}'], [f'y{i}']))
        prev = f'y{i}'
    graph = helper.make_graph(
        nodes,
        'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 32])],
        initializer=inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 18)])


def fake_export(model, path, loose):
    """What torch.onnx.export writes: one file, or one file per tensor."""
    if loose:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=False,
            size_threshold=0)
    else:
        onnx.save_model(model, path)


def run(path, x):
    return ort.InferenceSession(path).run(None, {'x': x})[0]


def test_loose_tensors_become_one_data_file(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((32, 32), np.float32) for _ in range(3)]
    x = rng.standard_normal((1, 32), np.float32)
    want = x @ weights[0] @ weights[1] @ weights[2]
    out = tmp_path / 'model'
    out.mkdir()
    (out / 'decoder.onnx').write_bytes(b'other graph')  # left untouched
    path = str(out / 'image_encoder.onnx')
    with graph_file(path) as scratch:
        fake_export(matmul_model(weights), scratch, loose=True)
        assert len(os.listdir(os.path.dirname(scratch))) == 4
    assert sorted(os.listdir(out)) == [
        'decoder.onnx', 'image_encoder.onnx', 'image_encoder.onnx.data'
    ]
    mode = os.stat(path).st_mode & 0o777
    assert os.stat(path + '.data').st_mode & 0o777 == mode
    assert_close_to_reference(run(path, x), want, matmul_atol(x, *weights))
    # a later export that fits one file replaces both
    with graph_file(path) as scratch:
        fake_export(matmul_model(weights[:1]), scratch, loose=False)
    assert sorted(os.listdir(out)) == ['decoder.onnx', 'image_encoder.onnx']
    assert_close_to_reference(
        run(path, x), x @ weights[0], matmul_atol(x, weights[0]))
